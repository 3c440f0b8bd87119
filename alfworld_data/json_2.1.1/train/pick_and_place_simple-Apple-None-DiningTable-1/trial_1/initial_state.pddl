(define (problem train_pick_and_place_simple-Apple-None-DiningTable-1_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        Knife_bar_1 - object
        Cabinet_bar_1 - receptacle
        loc_bar_2 - location
        Cabinet_bar_2 - receptacle
        loc_bar_3 - location
        Fridge_bar_1 - receptacle
        loc_bar_4 - location
        Apple_bar_1 - object
        Egg_bar_1 - object
        Microwave_bar_1 - receptacle
        loc_bar_5 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_6 - location
        DiningTable_bar_1 - receptacle
        loc_bar_7 - location
        AppleType - otype
        EggType - otype
        KnifeType - otype
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
        (objectType Knife_bar_1 KnifeType)
        (inReceptacle Knife_bar_1 CounterTop_bar_1)
        (objectAtLocation Knife_bar_1 loc_bar_1)
        (cleanable Knife_bar_1)
        (pickupable Knife_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_2)
        (openable Cabinet_bar_1)
        (receptacleType Cabinet_bar_2 CabinetType)
        (receptacleAtLocation Cabinet_bar_2 loc_bar_3)
        (openable Cabinet_bar_2)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_4)
        (openable Fridge_bar_1)
        (objectType Apple_bar_1 AppleType)
        (inReceptacle Apple_bar_1 Fridge_bar_1)
        (objectAtLocation Apple_bar_1 loc_bar_4)
        (cleanable Apple_bar_1)
        (heatable Apple_bar_1)
        (coolable Apple_bar_1)
        (sliceable Apple_bar_1)
        (pickupable Apple_bar_1)
        (objectType Egg_bar_1 EggType)
        (inReceptacle Egg_bar_1 Fridge_bar_1)
        (objectAtLocation Egg_bar_1 loc_bar_4)
        (cleanable Egg_bar_1)
        (heatable Egg_bar_1)
        (coolable Egg_bar_1)
        (sliceable Egg_bar_1)
        (pickupable Egg_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_5)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_6)
        (receptacleType DiningTable_bar_1 DiningTableType)
        (receptacleAtLocation DiningTable_bar_1 loc_bar_7)
        (canContain CounterTopType AppleType)
        (canContain CounterTopType EggType)
        (canContain CounterTopType KnifeType)
        (canContain DiningTableType AppleType)
        (canContain DiningTableType EggType)
        (canContain DiningTableType KnifeType)
        (canContain FridgeType AppleType)
        (canContain FridgeType EggType)
        (canContain MicrowaveType AppleType)
        (canContain MicrowaveType EggType)
        (canContain SinkBasinType AppleType)
        (canContain SinkBasinType EggType)
        (canContain SinkBasinType KnifeType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (inReceptacle ?o ?r)
                        (objectType ?o AppleType)
                        (receptacleType ?r DiningTableType)
                    )
                )
            )
        )
    )
)
