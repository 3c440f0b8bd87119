(define (problem train_pick_cool_then_place_in_recep-Cup-None-Cabinet-1_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        Cup_bar_1 - object
        Cabinet_bar_1 - receptacle
        loc_bar_2 - location
        Cabinet_bar_2 - receptacle
        loc_bar_3 - location
        Fridge_bar_1 - receptacle
        loc_bar_4 - location
        Microwave_bar_1 - receptacle
        loc_bar_5 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_6 - location
        Mug_bar_1 - object
        DiningTable_bar_1 - receptacle
        loc_bar_7 - location
        CupType - otype
        MugType - otype
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
        (objectType Cup_bar_1 CupType)
        (inReceptacle Cup_bar_1 CounterTop_bar_1)
        (objectAtLocation Cup_bar_1 loc_bar_1)
        (cleanable Cup_bar_1)
        (heatable Cup_bar_1)
        (coolable Cup_bar_1)
        (pickupable Cup_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_2)
        (openable Cabinet_bar_1)
        (receptacleType Cabinet_bar_2 CabinetType)
        (receptacleAtLocation Cabinet_bar_2 loc_bar_3)
        (openable Cabinet_bar_2)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_4)
        (openable Fridge_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_5)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_6)
        (objectType Mug_bar_1 MugType)
        (inReceptacle Mug_bar_1 Sink_bar_1_bar_SinkBasin)
        (objectAtLocation Mug_bar_1 loc_bar_6)
        (cleanable Mug_bar_1)
        (heatable Mug_bar_1)
        (coolable Mug_bar_1)
        (pickupable Mug_bar_1)
        (receptacleType DiningTable_bar_1 DiningTableType)
        (receptacleAtLocation DiningTable_bar_1 loc_bar_7)
        (canContain CabinetType CupType)
        (canContain CabinetType MugType)
        (canContain CounterTopType CupType)
        (canContain CounterTopType MugType)
        (canContain DiningTableType CupType)
        (canContain DiningTableType MugType)
        (canContain FridgeType CupType)
        (canContain FridgeType MugType)
        (canContain MicrowaveType CupType)
        (canContain MicrowaveType MugType)
        (canContain SinkBasinType CupType)
        (canContain SinkBasinType MugType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (coolable ?o)
                        (objectType ?o CupType)
                        (receptacleType ?r CabinetType)
                        (isCool ?o)
                        (inReceptacle ?o ?r)
                    )
                )
            )
        )
    )
)
