(define (problem train_pick_heat_then_place_in_recep-Mug-None-Shelf-3_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        Mug_bar_1 - object
        Cabinet_bar_1 - receptacle
        loc_bar_2 - location
        Fridge_bar_1 - receptacle
        loc_bar_3 - location
        Tomato_bar_1 - object
        Microwave_bar_1 - receptacle
        loc_bar_4 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_5 - location
        StoveBurner_bar_1 - receptacle
        loc_bar_6 - location
        Shelf_bar_1 - receptacle
        loc_bar_7 - location
        MugType - otype
        TomatoType - otype
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
        (objectType Mug_bar_1 MugType)
        (inReceptacle Mug_bar_1 CounterTop_bar_1)
        (objectAtLocation Mug_bar_1 loc_bar_1)
        (cleanable Mug_bar_1)
        (heatable Mug_bar_1)
        (coolable Mug_bar_1)
        (pickupable Mug_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_2)
        (openable Cabinet_bar_1)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_3)
        (openable Fridge_bar_1)
        (objectType Tomato_bar_1 TomatoType)
        (inReceptacle Tomato_bar_1 Fridge_bar_1)
        (objectAtLocation Tomato_bar_1 loc_bar_3)
        (cleanable Tomato_bar_1)
        (heatable Tomato_bar_1)
        (coolable Tomato_bar_1)
        (sliceable Tomato_bar_1)
        (pickupable Tomato_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_4)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_5)
        (receptacleType StoveBurner_bar_1 StoveBurnerType)
        (receptacleAtLocation StoveBurner_bar_1 loc_bar_6)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_7)
        (canContain CabinetType MugType)
        (canContain CounterTopType MugType)
        (canContain CounterTopType TomatoType)
        (canContain FridgeType MugType)
        (canContain FridgeType TomatoType)
        (canContain MicrowaveType MugType)
        (canContain MicrowaveType TomatoType)
        (canContain ShelfType MugType)
        (canContain SinkBasinType MugType)
        (canContain SinkBasinType TomatoType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (heatable ?o)
                        (objectType ?o MugType)
                        (receptacleType ?r ShelfType)
                        (isHot ?o)
                        (inReceptacle ?o ?r)
                    )
                )
            )
        )
    )
)
