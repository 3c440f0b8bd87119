(define (problem valid_unseen_pick_and_place_simple-Book-None-Bed-6_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Dresser_bar_1 - receptacle
        loc_bar_1 - location
        Drawer_bar_1 - receptacle
        loc_bar_2 - location
        Book_bar_1 - object
        Desk_bar_1 - receptacle
        loc_bar_3 - location
        Pen_bar_1 - object
        Pencil_bar_1 - object
        Bed_bar_1 - receptacle
        loc_bar_4 - location
        Shelf_bar_1 - receptacle
        loc_bar_5 - location
        SideTable_bar_1 - receptacle
        loc_bar_6 - location
        BookType - otype
        PenType - otype
        PencilType - otype
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
        (objectType Book_bar_1 BookType)
        (inReceptacle Book_bar_1 Drawer_bar_1)
        (objectAtLocation Book_bar_1 loc_bar_2)
        (pickupable Book_bar_1)
        (receptacleType Desk_bar_1 DeskType)
        (receptacleAtLocation Desk_bar_1 loc_bar_3)
        (objectType Pen_bar_1 PenType)
        (inReceptacle Pen_bar_1 Desk_bar_1)
        (objectAtLocation Pen_bar_1 loc_bar_3)
        (pickupable Pen_bar_1)
        (objectType Pencil_bar_1 PencilType)
        (inReceptacle Pencil_bar_1 Desk_bar_1)
        (objectAtLocation Pencil_bar_1 loc_bar_3)
        (pickupable Pencil_bar_1)
        (receptacleType Bed_bar_1 BedType)
        (receptacleAtLocation Bed_bar_1 loc_bar_4)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_5)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_6)
        (canContain BedType BookType)
        (canContain DeskType BookType)
        (canContain DeskType PenType)
        (canContain DeskType PencilType)
        (canContain DrawerType BookType)
        (canContain DrawerType PenType)
        (canContain DrawerType PencilType)
        (canContain DresserType BookType)
        (canContain DresserType PenType)
        (canContain DresserType PencilType)
        (canContain ShelfType BookType)
        (canContain ShelfType PenType)
        (canContain ShelfType PencilType)
        (canContain SideTableType BookType)
        (canContain SideTableType PenType)
        (canContain SideTableType PencilType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (inReceptacle ?o ?r)
                        (objectType ?o BookType)
                        (receptacleType ?r BedType)
                    )
                )
            )
        )
    )
)
