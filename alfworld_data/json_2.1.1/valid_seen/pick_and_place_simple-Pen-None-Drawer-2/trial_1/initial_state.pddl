(define (problem valid_seen_pick_and_place_simple-Pen-None-Drawer-2_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Desk_bar_1 - receptacle
        loc_bar_1 - location
        Book_bar_1 - object
        Drawer_bar_1 - receptacle
        loc_bar_2 - location
        Drawer_bar_2 - receptacle
        loc_bar_3 - location
        Shelf_bar_1 - receptacle
        loc_bar_4 - location
        Bed_bar_1 - receptacle
        loc_bar_5 - location
        SideTable_bar_1 - receptacle
        loc_bar_6 - location
        Pen_bar_1 - object
        CellPhone_bar_1 - object
        GarbageCan_bar_1 - receptacle
        loc_bar_7 - location
        BookType - otype
        CellPhoneType - otype
        PenType - otype
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
        (receptacleType Bed_bar_1 BedType)
        (receptacleAtLocation Bed_bar_1 loc_bar_5)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_6)
        (objectType Pen_bar_1 PenType)
        (inReceptacle Pen_bar_1 SideTable_bar_1)
        (objectAtLocation Pen_bar_1 loc_bar_6)
        (pickupable Pen_bar_1)
        (objectType CellPhone_bar_1 CellPhoneType)
        (inReceptacle CellPhone_bar_1 SideTable_bar_1)
        (objectAtLocation CellPhone_bar_1 loc_bar_6)
        (pickupable CellPhone_bar_1)
        (receptacleType GarbageCan_bar_1 GarbageCanType)
        (receptacleAtLocation GarbageCan_bar_1 loc_bar_7)
        (canContain BedType BookType)
        (canContain BedType CellPhoneType)
        (canContain DeskType BookType)
        (canContain DeskType CellPhoneType)
        (canContain DeskType PenType)
        (canContain DrawerType BookType)
        (canContain DrawerType CellPhoneType)
        (canContain DrawerType PenType)
        (canContain GarbageCanType PenType)
        (canContain ShelfType BookType)
        (canContain ShelfType CellPhoneType)
        (canContain ShelfType PenType)
        (canContain SideTableType BookType)
        (canContain SideTableType CellPhoneType)
        (canContain SideTableType PenType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (inReceptacle ?o ?r)
                        (objectType ?o PenType)
                        (receptacleType ?r DrawerType)
                    )
                )
            )
        )
    )
)
