(define (problem valid_seen_look_at_obj_in_light-KeyChain-None-DeskLamp-4_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Sofa_bar_1 - receptacle
        loc_bar_1 - location
        KeyChain_bar_1 - object
        CoffeeTable_bar_1 - receptacle
        loc_bar_2 - location
        DeskLamp_bar_1 - object
        SideTable_bar_1 - receptacle
        loc_bar_3 - location
        Drawer_bar_1 - receptacle
        loc_bar_4 - location
        Cabinet_bar_1 - receptacle
        loc_bar_5 - location
        ArmChair_bar_1 - receptacle
        loc_bar_6 - location
        DeskLampType - otype
        KeyChainType - otype
        ArmChairType - rtype
        CabinetType - rtype
        CoffeeTableType - rtype
        DrawerType - rtype
        SideTableType - rtype
        SofaType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType Sofa_bar_1 SofaType)
        (receptacleAtLocation Sofa_bar_1 loc_bar_1)
        (objectType KeyChain_bar_1 KeyChainType)
        (inReceptacle KeyChain_bar_1 Sofa_bar_1)
        (objectAtLocation KeyChain_bar_1 loc_bar_1)
        (pickupable KeyChain_bar_1)
        (receptacleType CoffeeTable_bar_1 CoffeeTableType)
        (receptacleAtLocation CoffeeTable_bar_1 loc_bar_2)
        (objectType DeskLamp_bar_1 DeskLampType)
        (inReceptacle DeskLamp_bar_1 CoffeeTable_bar_1)
        (objectAtLocation DeskLamp_bar_1 loc_bar_2)
        (toggleable DeskLamp_bar_1)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_3)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_4)
        (openable Drawer_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_5)
        (openable Cabinet_bar_1)
        (receptacleType ArmChair_bar_1 ArmChairType)
        (receptacleAtLocation ArmChair_bar_1 loc_bar_6)
        (canContain ArmChairType KeyChainType)
        (canContain CoffeeTableType KeyChainType)
        (canContain DrawerType KeyChainType)
        (canContain SideTableType KeyChainType)
        (canContain SofaType KeyChainType)
    )
    (:goal
         (and
             (exists (?ot - object
                      ?r - receptacle
                      ?a - agent
                      ?l - location)
                 (and
                     (objectType ?ot DeskLampType)
                     (toggleable ?ot)
                     (isToggled ?ot)
                     (receptacleAtLocation ?r ?l)
                     (atLocation ?a ?l)
                     (inReceptacle ?ot ?r)
                 )
             )
             (exists (?o - object
                      ?a - agent)
                 (and
                     (objectType ?o KeyChainType)
                     (holds ?a ?o)
                 )
             )
         )
    )
)
