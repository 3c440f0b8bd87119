(define (problem valid_unseen_pick_clean_then_place_in_recep-Pan-None-CounterTop-5_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        CounterTop_bar_2 - receptacle
        loc_bar_2 - location
        Apple_bar_1 - object
        Cabinet_bar_1 - receptacle
        loc_bar_3 - location
        Pan_bar_1 - object
        Fridge_bar_1 - receptacle
        loc_bar_4 - location
        Microwave_bar_1 - receptacle
        loc_bar_5 - location
        Sink_bar_1_bar_SinkBasin - receptacle
        loc_bar_6 - location
        AppleType - otype
        PanType - otype
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
        (receptacleType CounterTop_bar_2 CounterTopType)
        (receptacleAtLocation CounterTop_bar_2 loc_bar_2)
        (objectType Apple_bar_1 AppleType)
        (inReceptacle Apple_bar_1 CounterTop_bar_2)
        (objectAtLocation Apple_bar_1 loc_bar_2)
        (cleanable Apple_bar_1)
        (heatable Apple_bar_1)
        (coolable Apple_bar_1)
        (sliceable Apple_bar_1)
        (pickupable Apple_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_3)
        (openable Cabinet_bar_1)
        (objectType Pan_bar_1 PanType)
        (inReceptacle Pan_bar_1 Cabinet_bar_1)
        (objectAtLocation Pan_bar_1 loc_bar_3)
        (cleanable Pan_bar_1)
        (coolable Pan_bar_1)
        (pickupable Pan_bar_1)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_4)
        (openable Fridge_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_5)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_6)
        (canContain CabinetType PanType)
        (canContain CounterTopType AppleType)
        (canContain CounterTopType PanType)
        (canContain FridgeType AppleType)
        (canContain FridgeType PanType)
        (canContain MicrowaveType AppleType)
        (canContain SinkBasinType AppleType)
        (canContain SinkBasinType PanType)
    )
    (:goal
        (and
            (exists (?r - receptacle)
                (exists (?o - object)
                    (and
                        (cleanable ?o)
                        (objectType ?o PanType)
                        (receptacleType ?r CounterTopType)
                        (isClean ?o)
                        (inReceptacle ?o ?r)
                    )
                )
            )
        )
    )
)
