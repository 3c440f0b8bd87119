(define (problem valid_unseen_pick_two_obj_and_place-KeyChain-None-Dresser-6_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Dresser_bar_1 - receptacle
        loc_bar_1 - location
        Drawer_bar_1 - receptacle
        loc_bar_2 - location
        Desk_bar_1 - receptacle
        loc_bar_3 - location
        Bed_bar_1 - receptacle
        loc_bar_4 - location
        Shelf_bar_1 - receptacle
        loc_bar_5 - location
        KeyChain_bar_1 - object
        SideTable_bar_1 - receptacle
        loc_bar_6 - location
        KeyChain_bar_2 - object
        KeyChainType - otype
        BedType - rtype
        DeskType - rtype
        DrawerType - rtype
        DresserType - rtype
        ShelfType - rtype
        SideTableType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType Dresser_bar_1 DresserType)
        (receptacleAtLocation Dresser_bar_1 loc_bar_1)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_2)
        (openable Drawer_bar_1)
        (receptacleType Desk_bar_1 DeskType)
        (receptacleAtLocation Desk_bar_1 loc_bar_3)
        (receptacleType Bed_bar_1 BedType)
        (receptacleAtLocation Bed_bar_1 loc_bar_4)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_5)
        (objectType KeyChain_bar_1 KeyChainType)
        (inReceptacle KeyChain_bar_1 Shelf_bar_1)
        (objectAtLocation KeyChain_bar_1 loc_bar_5)
        (pickupable KeyChain_bar_1)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_6)
        (objectType KeyChain_bar_2 KeyChainType)
        (inReceptacle KeyChain_bar_2 SideTable_bar_1)
        (objectAtLocation KeyChain_bar_2 loc_bar_6)
        (pickupable KeyChain_bar_2)
        (canContain DeskType KeyChainType)
        (canContain DrawerType KeyChainType)
        (canContain DresserType KeyChainType)
        (canContain ShelfType KeyChainType)
        (canContain SideTableType KeyChainType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o1 - object)
                    (and
                        (objectType ?o1 KeyChainType)
                        (receptacleType ?r DresserType)
                        (inReceptacle ?o1 ?r)
                        (exists (?o2 - object)
                            (and
                                (not (= ?o1 ?o2))
                                (objectType ?o2 KeyChainType)
                                (receptacleType ?r DresserType)
                                (inReceptacle ?o2 ?r)
                            )
                        )
                    )
                )
            )
        )
    )
)
