(define (problem train_pick_two_obj_and_place-Book-None-CoffeeTable-4_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Sofa_bar_1 - receptacle
        loc_bar_1 - location
        Book_bar_1 - object
        CoffeeTable_bar_1 - receptacle
        loc_bar_2 - location
        SideTable_bar_1 - receptacle
        loc_bar_3 - location
        Drawer_bar_1 - receptacle
        loc_bar_4 - location
        Cabinet_bar_1 - receptacle
        loc_bar_5 - location
        Book_bar_2 - object
        KeyChain_bar_1 - object
        ArmChair_bar_1 - receptacle
        loc_bar_6 - location
        BookType - otype
        KeyChainType - otype
        ArmChairType - rtype
        CabinetType - rtype
        CoffeeTableType - rtype
        DrawerType - rtype
        SideTableType - rtype
        SofaType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType Sofa_bar_1 SofaType)
        (receptacleAtLocation Sofa_bar_1 loc_bar_1)
        (objectType Book_bar_1 BookType)
        (inReceptacle Book_bar_1 Sofa_bar_1)
        (objectAtLocation Book_bar_1 loc_bar_1)
        (pickupable Book_bar_1)
        (receptacleType CoffeeTable_bar_1 CoffeeTableType)
        (receptacleAtLocation CoffeeTable_bar_1 loc_bar_2)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_3)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_4)
        (openable Drawer_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_5)
        (openable Cabinet_bar_1)
        (objectType Book_bar_2 BookType)
        (inReceptacle Book_bar_2 Cabinet_bar_1)
        (objectAtLocation Book_bar_2 loc_bar_5)
        (pickupable Book_bar_2)
        (objectType KeyChain_bar_1 KeyChainType)
        (inReceptacle KeyChain_bar_1 Cabinet_bar_1)
        (objectAtLocation KeyChain_bar_1 loc_bar_5)
        (pickupable KeyChain_bar_1)
        (receptacleType ArmChair_bar_1 ArmChairType)
        (receptacleAtLocation ArmChair_bar_1 loc_bar_6)
        (canContain ArmChairType BookType)
        (canContain ArmChairType KeyChainType)
        (canContain CabinetType BookType)
        (canContain CoffeeTableType BookType)
        (canContain CoffeeTableType KeyChainType)
        (canContain DrawerType BookType)
        (canContain DrawerType KeyChainType)
        (canContain SideTableType BookType)
        (canContain SideTableType KeyChainType)
        (canContain SofaType BookType)
        (canContain SofaType KeyChainType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o1 - object)
                    (and
                        (objectType ?o1 BookType)
                        (receptacleType ?r CoffeeTableType)
                        (inReceptacle ?o1 ?r)
                        (exists (?o2 - object)
                            (and
                                (not (= ?o1 ?o2))
                                (objectType ?o2 BookType)
                                (receptacleType ?r CoffeeTableType)
                                (inReceptacle ?o2 ?r)
                            )
                        )
                    )
                )
            )
        )
    )
)
