(define (problem train_pick_two_obj_and_place-Egg-None-Fridge-3_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        Egg_bar_1 - object
        Egg_bar_2 - object
        Bread_bar_1 - object
        Cabinet_bar_1 - receptacle
        loc_bar_2 - location
        Fridge_bar_1 - receptacle
        loc_bar_3 - location
        Microwave_bar_1 - receptacle
        loc_bar_4 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_5 - location
        StoveBurner_bar_1 - receptacle
        loc_bar_6 - location
        Shelf_bar_1 - receptacle
        loc_bar_7 - location
        BreadType - otype
        EggType - otype
        CabinetType - rtype
        CounterTopType - rtype
        FridgeType - rtype
        MicrowaveType - rtype
        ShelfType - rtype
        SinkBasinType - rtype
        StoveBurnerType - rtype
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
        (objectType Egg_bar_2 EggType)
        (inReceptacle Egg_bar_2 CounterTop_bar_1)
        (objectAtLocation Egg_bar_2 loc_bar_1)
        (cleanable Egg_bar_2)
        (heatable Egg_bar_2)
        (coolable Egg_bar_2)
        (sliceable Egg_bar_2)
        (pickupable Egg_bar_2)
        (objectType Bread_bar_1 BreadType)
        (inReceptacle Bread_bar_1 CounterTop_bar_1)
        (objectAtLocation Bread_bar_1 loc_bar_1)
        (heatable Bread_bar_1)
        (coolable Bread_bar_1)
        (sliceable Bread_bar_1)
        (pickupable Bread_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_2)
        (openable Cabinet_bar_1)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_3)
        (openable Fridge_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_4)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_5)
        (receptacleType StoveBurner_bar_1 StoveBurnerType)
        (receptacleAtLocation StoveBurner_bar_1 loc_bar_6)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_7)
        (canContain CounterTopType BreadType)
        (canContain CounterTopType EggType)
        (canContain FridgeType BreadType)
        (canContain FridgeType EggType)
        (canContain MicrowaveType BreadType)
        (canContain MicrowaveType EggType)
        (canContain SinkBasinType EggType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o1 - object)
                    (and
                        (objectType ?o1 EggType)
                        (receptacleType ?r FridgeType)
                        (inReceptacle ?o1 ?r)
                        (exists (?o2 - object)
                            (and
                                (not (= ?o1 ?o2))
                                (objectType ?o2 EggType)
                                (receptacleType ?r FridgeType)
                                (inReceptacle ?o2 ?r)
                            )
                        )
                    )
                )
            )
        )
    )
)
