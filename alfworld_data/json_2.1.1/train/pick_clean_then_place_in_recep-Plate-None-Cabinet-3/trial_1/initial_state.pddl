(define (problem train_pick_clean_then_place_in_recep-Plate-None-Cabinet-3_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        Plate_bar_1 - object
        Fork_bar_1 - object
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
        ForkType - otype
        PlateType - otype
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
        (objectType Plate_bar_1 PlateType)
        (inReceptacle Plate_bar_1 CounterTop_bar_1)
        (objectAtLocation Plate_bar_1 loc_bar_1)
        (cleanable Plate_bar_1)
        (heatable Plate_bar_1)
        (coolable Plate_bar_1)
        (pickupable Plate_bar_1)
        (objectType Fork_bar_1 ForkType)
        (inReceptacle Fork_bar_1 CounterTop_bar_1)
        (objectAtLocation Fork_bar_1 loc_bar_1)
        (cleanable Fork_bar_1)
        (pickupable Fork_bar_1)
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
        (canContain CabinetType PlateType)
        (canContain CounterTopType ForkType)
        (canContain CounterTopType PlateType)
        (canContain FridgeType PlateType)
        (canContain MicrowaveType PlateType)
        (canContain ShelfType PlateType)
        (canContain SinkBasinType ForkType)
        (canContain SinkBasinType PlateType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (cleanable ?o)
                        (objectType ?o PlateType)
                        (receptacleType ?r CabinetType)
                        (isClean ?o)
                        (inReceptacle ?o ?r)
                    )
                )
            )
        )
    )
)
