(define (problem train_look_at_obj_in_light-Book-None-DeskLamp-2_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Desk_bar_1 - receptacle
        loc_bar_1 - location
        Drawer_bar_1 - receptacle
        loc_bar_2 - location
        Drawer_bar_2 - receptacle
        loc_bar_3 - location
        Shelf_bar_1 - receptacle
        loc_bar_4 - location
        Bed_bar_1 - receptacle
        loc_bar_5 - location
        Book_bar_1 - object
        Pillow_bar_1 - object
        SideTable_bar_1 - receptacle
        loc_bar_6 - location
        DeskLamp_bar_1 - object
        GarbageCan_bar_1 - receptacle
        loc_bar_7 - location
        BookType - otype
        DeskLampType - otype
        PillowType - otype
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
        (objectType Book_bar_1 BookType)
        (inReceptacle Book_bar_1 Bed_bar_1)
        (objectAtLocation Book_bar_1 loc_bar_5)
        (pickupable Book_bar_1)
        (objectType Pillow_bar_1 PillowType)
        (inReceptacle Pillow_bar_1 Bed_bar_1)
        (objectAtLocation Pillow_bar_1 loc_bar_5)
        (pickupable Pillow_bar_1)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_6)
        (objectType DeskLamp_bar_1 DeskLampType)
        (inReceptacle DeskLamp_bar_1 SideTable_bar_1)
        (objectAtLocation DeskLamp_bar_1 loc_bar_6)
        (toggleable DeskLamp_bar_1)
        (receptacleType GarbageCan_bar_1 GarbageCanType)
        (receptacleAtLocation GarbageCan_bar_1 loc_bar_7)
        (canContain BedType BookType)
        (canContain BedType PillowType)
        (canContain DeskType BookType)
        (canContain DrawerType BookType)
        (canContain ShelfType BookType)
        (canContain SideTableType BookType)
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
                     (objectType ?o BookType)
                     (holds ?a ?o)
                 )
             )
         )
    )
)
