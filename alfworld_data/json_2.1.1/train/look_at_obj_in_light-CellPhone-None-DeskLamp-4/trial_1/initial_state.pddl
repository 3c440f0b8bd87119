(define (problem train_look_at_obj_in_light-CellPhone-None-DeskLamp-4_trial_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        Sofa_bar_1 - receptacle
        loc_bar_1 - location
        CoffeeTable_bar_1 - receptacle
        loc_bar_2 - location
        SideTable_bar_1 - receptacle
        loc_bar_3 - location
        DeskLamp_bar_1 - object
        KeyChain_bar_1 - object
        Drawer_bar_1 - receptacle
        loc_bar_4 - location
        Cabinet_bar_1 - receptacle
        loc_bar_5 - location
        CellPhone_bar_1 - object
        ArmChair_bar_1 - receptacle
        loc_bar_6 - location
        CellPhoneType - otype
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
        (receptacleType CoffeeTable_bar_1 CoffeeTableType)
        (receptacleAtLocation CoffeeTable_bar_1 loc_bar_2)
        (receptacleType SideTable_bar_1 SideTableType)
        (receptacleAtLocation SideTable_bar_1 loc_bar_3)
        (objectType DeskLamp_bar_1 DeskLampType)
        (inReceptacle DeskLamp_bar_1 SideTable_bar_1)
        (objectAtLocation DeskLamp_bar_1 loc_bar_3)
        (toggleable DeskLamp_bar_1)
        (objectType KeyChain_bar_1 KeyChainType)
        (inReceptacle KeyChain_bar_1 SideTable_bar_1)
        (objectAtLocation KeyChain_bar_1 loc_bar_3)
        (pickupable KeyChain_bar_1)
        (receptacleType Drawer_bar_1 DrawerType)
        (receptacleAtLocation Drawer_bar_1 loc_bar_4)
        (openable Drawer_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_5)
        (openable Cabinet_bar_1)
        (objectType CellPhone_bar_1 CellPhoneType)
        (inReceptacle CellPhone_bar_1 Cabinet_bar_1)
        (objectAtLocation CellPhone_bar_1 loc_bar_5)
        (pickupable CellPhone_bar_1)
        (receptacleType ArmChair_bar_1 ArmChairType)
        (receptacleAtLocation ArmChair_bar_1 loc_bar_6)
        (canContain ArmChairType CellPhoneType)
        (canContain ArmChairType KeyChainType)
        (canContain CoffeeTableType CellPhoneType)
        (canContain CoffeeTableType KeyChainType)
        (canContain DrawerType CellPhoneType)
        (canContain DrawerType KeyChainType)
        (canContain SideTableType CellPhoneType)
        (canContain SideTableType KeyChainType)
        (canContain SofaType CellPhoneType)
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
                     (objectType ?o CellPhoneType)
                     (holds ?a ?o)
                 )
             )
         )
    )
)
