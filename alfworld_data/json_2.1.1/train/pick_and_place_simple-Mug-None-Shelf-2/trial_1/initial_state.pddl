(define (problem train_pick_and_place_simple-Mug-None-Shelf-2_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Desk_bar_1 - receptacle
        loc_bar_1 - location
        Mug_bar_1 - object
        Pen_bar_1 - object
        Drawer_bar_1 - receptacle
        loc_bar_2 - location
        Pencil_bar_1 - object
        Drawer_bar_2 - receptacle
        loc_bar_3 - location
        Shelf_bar_1 - receptacle
        loc_bar_4 - location
        Bed_bar_1 - receptacle
        loc_bar_5 - location
        SideTable_bar_1 - receptacle
        loc_bar_6 - location
        GarbageCan_bar_1 - receptacle
        loc_bar_7 - location
        MugType - otype
        PenType - otype
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
        (objectType Mug_bar_1 MugType)
        (inReceptacle Mug_bar_1 Desk_bar_1)
        (objectAtLocation Mug_bar_1 loc_bar_1)
        (cleanable Mug_bar_1)
        (heatable Mug_bar_1)
        (coolable Mug_bar_1)
        (pickupable Mug_bar_1)
        (objectType Pen_bar_1 PenType)
        (inReceptacle Pen_bar_1 Desk_bar_1)
        (objectAtLocation Pen_bar_1 loc_bar_1)
        (pickupable Pen_bar_1)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_2)
        (openable Drawer_bar_1)
        (objectType Pencil_bar_1 PencilType)
        (inReceptacle Pencil_bar_1 Drawer_bar_1)
        (objectAtLocation Pencil_bar_1 loc_bar_2)
        (pickupable Pencil_bar_1)
        (receptacleType Drawer_bar_2 DrawerType)
        (receptacleAtLocation Drawer_bar_2 loc_bar_3)
        (openable Drawer_bar_2)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_4)
        (receptacleType Bed_bar_1 BedType)
        (receptacleAtLocation Bed_bar_1 loc_bar_5)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_6)
        (receptacleType GarbageCan_bar_1 GarbageCanType)
        (receptacleAtLocation GarbageCan_bar_1 loc_bar_7)
        (canContain DeskType MugType)
        (canContain DeskType PenType)
        (canContain DeskType PencilType)
        (canContain DrawerType PenType)
        (canContain DrawerType PencilType)
        (canContain GarbageCanType PenType)
        (canContain GarbageCanType PencilType)
        (canContain ShelfType MugType)
        (canContain ShelfType PenType)
        (canContain ShelfType PencilType)
        (canContain SideTableType MugType)
        (canContain SideTableType PenType)
        (canContain SideTableType PencilType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (inReceptacle ?o ?r)
                        (objectType ?o MugType)
                        (receptacleType ?r ShelfType)
                    )
                )
            )
        )
    )
)
