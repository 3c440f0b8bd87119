(define (problem valid_unseen_pick_cool_then_place_in_recep-WineBottle-None-CounterTop-5_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        Egg_bar_1 - object
        CounterTop_bar_2 - receptacle
        loc_bar_2 - location
        Cabinet_bar_1 - receptacle
        loc_bar_3 - location
        WineBottle_bar_1 - object
        Fridge_bar_1 - receptacle
        loc_bar_4 - location
        Microwave_bar_1 - receptacle
        loc_bar_5 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_6 - location
        EggType - otype
        WineBottleType - otype
        CabinetType - rtype
        CounterTopType - rtype
        FridgeType - rtype
        MicrowaveType - rtype
        SinkBasinType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType CounterTop_bar_1 CounterTopType)
        (receptacleAtLocation CounterTop_bar_1 loc_bar_1)
        (objectType Egg_bar_1 EggType)
        (inReceptacle Egg_bar_1 CounterTop_bar_1)
        (objectAtLocation Egg_bar_1 loc_bar_1)
        (cleanable Egg_bar_1)
        (heatable Egg_bar_1)
        (coolable Egg_bar_1)
        (sliceable Egg_bar_1)
        (pickupable Egg_bar_1)
        (receptacleType CounterTop_bar_2 CounterTopType)
        (receptacleAtLocation CounterTop_bar_2 loc_bar_2)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_3)
        (openable Cabinet_bar_1)
        (objectType WineBottle_bar_1 WineBottleType)
        (inReceptacle WineBottle_bar_1 Cabinet_bar_1)
        (objectAtLocation WineBottle_bar_1 loc_bar_3)
        (coolable WineBottle_bar_1)
        (pickupable WineBottle_bar_1)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_4)
        (openable Fridge_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_5)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_6)
        (canContain CabinetType WineBottleType)
        (canContain CounterTopType EggType)
        (canContain CounterTopType WineBottleType)
        (canContain FridgeType EggType)
        (canContain FridgeType WineBottleType)
        (canContain MicrowaveType EggType)
        (canContain SinkBasinType EggType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (coolable ?o)
                        (objectType ?o WineBottleType)
                        (receptacleType ?r CounterTopType)
                        (isCool ?o)
                        (inReceptacle ?o ?r)
                    )
                )
            )
        )
    )
)
