(define (problem train_pick_two_obj_and_place-Pencil-None-Drawer-2_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Desk_bar_1 - receptacle
        loc_bar_1 - location
        Pencil_bar_1 - object
        Book_bar_1 - object
        Drawer_bar_1 - receptacle
        loc_bar_2 - location
        Drawer_bar_2 - receptacle
        loc_bar_3 - location
        Shelf_bar_1 - receptacle
        loc_bar_4 - location
        Pencil_bar_2 - object
        Bed_bar_1 - receptacle
        loc_bar_5 - location
        SideTable_bar_1 - receptacle
        loc_bar_6 - location
        GarbageCan_bar_1 - receptacle
        loc_bar_7 - location
        BookType - otype
        PencilType - otype
        BedType - rtype
        DeskType - rtype
        DrawerType - rtype
        GarbageCanType - rtype
        ShelfType - rtype
        SideTableType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType Desk_bar_1 DeskType)
        (receptacleAtLocation Desk_bar_1 loc_bar_1)
        (objectType Pencil_bar_1 PencilType)
        (inReceptacle Pencil_bar_1 Desk_bar_1)
        (objectAtLocation Pencil_bar_1 loc_bar_1)
        (pickupable Pencil_bar_1)
        (objectType Book_bar_1 BookType)
        (inReceptacle Book_bar_1 Desk_bar_1)
        (objectAtLocation Book_bar_1 loc_bar_1)
        (pickupable Book_bar_1)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_2)
        (openable Drawer_bar_1)
        (receptacleType Drawer_bar_2 DrawerType)
        (receptacleAtLocation Drawer_bar_2 loc_bar_3)
        (openable Drawer_bar_2)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_4)
        (objectType Pencil_bar_2 PencilType)
        (inReceptacle Pencil_bar_2 Shelf_bar_1)
        (objectAtLocation Pencil_bar_2 loc_bar_4)
        (pickupable Pencil_bar_2)
        (receptacleType Bed_bar_1 BedType)
        (receptacleAtLocation Bed_bar_1 loc_bar_5)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_6)
        (receptacleType GarbageCan_bar_1 GarbageCanType)
        (receptacleAtLocation GarbageCan_bar_1 loc_bar_7)
        (canContain BedType BookType)
        (canContain DeskType BookType)
        (canContain DeskType PencilType)
        (canContain DrawerType BookType)
        (canContain DrawerType PencilType)
        (canContain GarbageCanType PencilType)
        (canContain ShelfType BookType)
        (canContain ShelfType PencilType)
        (canContain SideTableType BookType)
        (canContain SideTableType PencilType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o1 - object)
                    (and
                        (objectType ?o1 PencilType)
                        (receptacleType ?r DrawerType)
                        (inReceptacle ?o1 ?r)
                        (exists (?o2 - object)
                            (and
                                (not (= ?o1 ?o2))
                                (objectType ?o2 PencilType)
                                (receptacleType ?r DrawerType)
                                (inReceptacle ?o2 ?r)
                            )
                        )
                    )
                )
            )
        )
    )
)
