(define (problem train_look_at_obj_in_light-Pencil-None-DeskLamp-2_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Desk_bar_1 - receptacle
        loc_bar_1 - location
        DeskLamp_bar_1 - object
        Book_bar_1 - object
        Drawer_bar_1 - receptacle
        loc_bar_2 - location
        Drawer_bar_2 - receptacle
        loc_bar_3 - location
        Pencil_bar_1 - object
        Shelf_bar_1 - receptacle
        loc_bar_4 - location
        Bed_bar_1 - receptacle
        loc_bar_5 - location
        SideTable_bar_1 - receptacle
        loc_bar_6 - location
        GarbageCan_bar_1 - receptacle
        loc_bar_7 - location
        BookType - otype
        DeskLampType - otype
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
        (objectType DeskLamp_bar_1 DeskLampType)
        (inReceptacle DeskLamp_bar_1 Desk_bar_1)
        (objectAtLocation DeskLamp_bar_1 loc_bar_1)
        (toggleable DeskLamp_bar_1)
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
        (objectType Pencil_bar_1 PencilType)
        (inReceptacle Pencil_bar_1 Drawer_bar_2)
        (objectAtLocation Pencil_bar_1 loc_bar_3)
        (pickupable Pencil_bar_1)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_4)
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
             (exists (?ot - object
                      ?r - receptacle
                      ?a - agent
                      ?l - location)
                 (and
                     (objectType ?ot DeskLampType)
                     (toggleable ?ot)
                     (isToggled ?ot)
                     (receptacleAtLocation ?r ?l)
                     (atLocation ?a ?l)
                     (inReceptacle ?ot ?r)
                 )
             )
             (exists (?o - object
                      ?a - agent)
                 (and
                     (objectType ?o PencilType)
                     (holds ?a ?o)
                 )
             )
         )
    )
)
