(define (problem valid_unseen_pick_heat_then_place_in_recep-Apple-None-DiningTable-7_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        DiningTable_bar_1 - receptacle
        loc_bar_1 - location
        Cabinet_bar_1 - receptacle
        loc_bar_2 - location
        Apple_bar_1 - object
        Drawer_bar_1 - receptacle
        loc_bar_3 - location
        Fork_bar_1 - object
        Fridge_bar_1 - receptacle
        loc_bar_4 - location
        Microwave_bar_1 - receptacle
        loc_bar_5 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_6 - location
        GarbageCan_bar_1 - receptacle
        loc_bar_7 - location
        AppleType - otype
        ForkType - otype
        CabinetType - rtype
        DiningTableType - rtype
        DrawerType - rtype
        FridgeType - rtype
        GarbageCanType - rtype
        MicrowaveType - rtype
        SinkBasinType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType DiningTable_bar_1 DiningTableType)
        (receptacleAtLocation DiningTable_bar_1 loc_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_2)
        (openable Cabinet_bar_1)
        (objectType Apple_bar_1 AppleType)
        (inReceptacle Apple_bar_1 Cabinet_bar_1)
        (objectAtLocation Apple_bar_1 loc_bar_2)
        (cleanable Apple_bar_1)
        (heatable Apple_bar_1)
        (coolable Apple_bar_1)
        (sliceable Apple_bar_1)
        (pickupable Apple_bar_1)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_3)
        (openable Drawer_bar_1)
        (objectType Fork_bar_1 ForkType)
        (inReceptacle Fork_bar_1 Drawer_bar_1)
        (objectAtLocation Fork_bar_1 loc_bar_3)
        (cleanable Fork_bar_1)
        (pickupable Fork_bar_1)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_4)
        (openable Fridge_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_5)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_6)
        (receptacleType GarbageCan_bar_1 GarbageCanType)
        (receptacleAtLocation GarbageCan_bar_1 loc_bar_7)
        (canContain DiningTableType AppleType)
        (canContain DiningTableType ForkType)
        (canContain DrawerType ForkType)
        (canContain FridgeType AppleType)
        (canContain GarbageCanType AppleType)
        (canContain MicrowaveType AppleType)
        (canContain SinkBasinType AppleType)
        (canContain SinkBasinType ForkType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (heatable ?o)
                        (objectType ?o AppleType)
                        (receptacleType ?r DiningTableType)
                        (isHot ?o)
                        (inReceptacle ?o ?r)
                    )
                )
            )
        )
    )
)
