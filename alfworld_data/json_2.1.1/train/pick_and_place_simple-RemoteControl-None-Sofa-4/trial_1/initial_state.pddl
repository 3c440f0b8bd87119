(define (problem train_pick_and_place_simple-RemoteControl-None-Sofa-4_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Sofa_bar_1 - receptacle
        loc_bar_1 - location
        CoffeeTable_bar_1 - receptacle
        loc_bar_2 - location
        Book_bar_1 - object
        SideTable_bar_1 - receptacle
        loc_bar_3 - location
        Drawer_bar_1 - receptacle
        loc_bar_4 - location
        RemoteControl_bar_1 - object
        Cabinet_bar_1 - receptacle
        loc_bar_5 - location
        ArmChair_bar_1 - receptacle
        loc_bar_6 - location
        BookType - otype
        RemoteControlType - otype
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
        (receptacleType CoffeeTable_bar_1 CoffeeTableType)
        (receptacleAtLocation CoffeeTable_bar_1 loc_bar_2)
        (objectType Book_bar_1 BookType)
        (inReceptacle Book_bar_1 CoffeeTable_bar_1)
        (objectAtLocation Book_bar_1 loc_bar_2)
        (pickupable Book_bar_1)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_3)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_4)
        (openable Drawer_bar_1)
        (objectType RemoteControl_bar_1 RemoteControlType)
        (inReceptacle RemoteControl_bar_1 Drawer_bar_1)
        (objectAtLocation RemoteControl_bar_1 loc_bar_4)
        (pickupable RemoteControl_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_5)
        (openable Cabinet_bar_1)
        (receptacleType ArmChair_bar_1 ArmChairType)
        (receptacleAtLocation ArmChair_bar_1 loc_bar_6)
        (canContain ArmChairType BookType)
        (canContain ArmChairType RemoteControlType)
        (canContain CabinetType BookType)
        (canContain CoffeeTableType BookType)
        (canContain CoffeeTableType RemoteControlType)
        (canContain DrawerType BookType)
        (canContain DrawerType RemoteControlType)
        (canContain SideTableType BookType)
        (canContain SideTableType RemoteControlType)
        (canContain SofaType BookType)
        (canContain SofaType RemoteControlType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (inReceptacle ?o ?r)
                        (objectType ?o RemoteControlType)
                        (receptacleType ?r SofaType)
                    )
                )
            )
        )
    )
)
