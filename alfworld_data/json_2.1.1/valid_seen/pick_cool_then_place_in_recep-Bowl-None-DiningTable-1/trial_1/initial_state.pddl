(define (problem valid_seen_pick_cool_then_place_in_recep-Bowl-None-DiningTable-1_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        Cabinet_bar_1 - receptacle
        loc_bar_2 - location
        Bowl_bar_1 - object
        Cup_bar_1 - object
        Cabinet_bar_2 - receptacle
        loc_bar_3 - location
        Fridge_bar_1 - receptacle
        loc_bar_4 - location
        Microwave_bar_1 - receptacle
        loc_bar_5 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_6 - location
        DiningTable_bar_1 - receptacle
        loc_bar_7 - location
        BowlType - otype
        CupType - otype
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
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_2)
        (openable Cabinet_bar_1)
        (objectType Bowl_bar_1 BowlType)
        (inReceptacle Bowl_bar_1 Cabinet_bar_1)
        (objectAtLocation Bowl_bar_1 loc_bar_2)
        (cleanable Bowl_bar_1)
        (coolable Bowl_bar_1)
        (pickupable Bowl_bar_1)
        (objectType Cup_bar_1 CupType)
        (inReceptacle Cup_bar_1 Cabinet_bar_1)
        (objectAtLocation Cup_bar_1 loc_bar_2)
        (cleanable Cup_bar_1)
        (heatable Cup_bar_1)
        (coolable Cup_bar_1)
        (pickupable Cup_bar_1)
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
        (receptacleType DiningTable_bar_1 DiningTableType)
        (receptacleAtLocation DiningTable_bar_1 loc_bar_7)
        (canContain CabinetType BowlType)
        (canContain CabinetType CupType)
        (canContain CounterTopType BowlType)
        (canContain CounterTopType CupType)
        (canContain DiningTableType BowlType)
        (canContain DiningTableType CupType)
        (canContain FridgeType BowlType)
        (canContain FridgeType CupType)
        (canContain MicrowaveType BowlType)
        (canContain MicrowaveType CupType)
        (canContain SinkBasinType BowlType)
        (canContain SinkBasinType CupType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (coolable ?o)
                        (objectType ?o BowlType)
                        (receptacleType ?r DiningTableType)
                        (isCool ?o)
                        (inReceptacle ?o ?r)
                    )
                )
            )
        )
    )
)
