(define (problem train_pick_heat_then_place_in_recep-Bread-None-DiningTable-1_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        Apple_bar_1 - object
        Cabinet_bar_1 - receptacle
        loc_bar_2 - location
        Cabinet_bar_2 - receptacle
        loc_bar_3 - location
        Bread_bar_1 - object
        Fridge_bar_1 - receptacle
        loc_bar_4 - location
        Microwave_bar_1 - receptacle
        loc_bar_5 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_6 - location
        DiningTable_bar_1 - receptacle
        loc_bar_7 - location
        AppleType - otype
        BreadType - otype
        CabinetType - rtype
        CounterTopType - rtype
        DiningTableType - rtype
        FridgeType - rtype
        MicrowaveType - rtype
        SinkBasinType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType CounterTop_bar_1 CounterTopType)
        (receptacleAtLocation CounterTop_bar_1 loc_bar_1)
        (objectType Apple_bar_1 AppleType)
        (inReceptacle Apple_bar_1 CounterTop_bar_1)
        (objectAtLocation Apple_bar_1 loc_bar_1)
        (cleanable Apple_bar_1)
        (heatable Apple_bar_1)
        (coolable Apple_bar_1)
        (sliceable Apple_bar_1)
        (pickupable Apple_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_2)
        (openable Cabinet_bar_1)
        (receptacleType Cabinet_bar_2 CabinetType)
        (receptacleAtLocation Cabinet_bar_2 loc_bar_3)
        (openable Cabinet_bar_2)
        (objectType Bread_bar_1 BreadType)
        (inReceptacle Bread_bar_1 Cabinet_bar_2)
        (objectAtLocation Bread_bar_1 loc_bar_3)
        (heatable Bread_bar_1)
        (coolable Bread_bar_1)
        (sliceable Bread_bar_1)
        (pickupable Bread_bar_1)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_4)
        (openable Fridge_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_5)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_6)
        (receptacleType DiningTable_bar_1 DiningTableType)
        (receptacleAtLocation DiningTable_bar_1 loc_bar_7)
        (canContain CounterTopType AppleType)
        (canContain CounterTopType BreadType)
        (canContain DiningTableType AppleType)
        (canContain DiningTableType BreadType)
        (canContain FridgeType AppleType)
        (canContain FridgeType BreadType)
        (canContain MicrowaveType AppleType)
        (canContain MicrowaveType BreadType)
        (canContain SinkBasinType AppleType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (heatable ?o)
                        (objectType ?o BreadType)
                        (receptacleType ?r DiningTableType)
                        (isHot ?o)
                        (inReceptacle ?o ?r)
                    )
                )
            )
        )
    )
)
