"""ALFWorld's searching expert on a room written by hand: what it knows, what it does, its plan (no engine)."""
from envs import AgentStep, AlfredTask, Room, SearchingExpert, SearchKnowledge, StepFacts
from oracle import oracle_verdict
from teacher import render_facts, teacher_prompt

PRIOR = {"pen": {"desk": 0.5, "sidetable": 0.3, "drawer": 0.2}, "desklamp": {"sidetable": 0.4}}
PEN_TO_SHELF = AlfredTask("pick_and_place_simple", "pen", "shelf")


def room(**contents):
    """A bedroom: desk 1 and sidetable 1 stand apart, drawer 1 (closed) beside the desk, shelf 1 and 2."""
    everything = {"desk 1": [], "drawer 1": [], "sidetable 1": [], "shelf 1": [], "shelf 2": []}
    everything.update({r.replace("_", " "): objects.split(",") for r, objects in contents.items()})
    return Room(location={"desk 1": "l1", "drawer 1": "l1", "sidetable 1": "l2", "shelf 1": "l3", "shelf 2": "l4"},
                openable={"drawer 1"}, opened=set(), contents=everything, at="l0", holding=None,
                changed={"clean": set(), "heat": set(), "cool": set()}, toggled=set())


def play(task, start):
    """The expert's (thought, command) turns played on the room to the win."""
    expert, world = SearchingExpert(task, PRIOR), start.copy()
    known, turns = SearchKnowledge.start(world), []
    while not world.won(task):
        thought, action = expert.step(known)
        turns.append((thought, action))
        world.apply(action)
        known.observe(world, action, valid=True)
    return turns


def test_the_expert_knows_only_what_it_has_seen():
    known = SearchKnowledge.start(room(drawer_1="pen 1"))
    assert known.room.contents is None and known.seen == {}
    world = room(drawer_1="pen 1")
    for action in ["go to desk 1", "open drawer 1"]:
        world.apply(action)
        known.observe(world, action, valid=True)
    assert known.seen == {"desk 1": [], "drawer 1": ["pen 1"]} and known.facing == "drawer 1"


def test_the_expert_checks_the_likeliest_places_first_and_the_plan_is_what_it_does():
    turns = play(PEN_TO_SHELF, room(drawer_1="pen 1", desk_1="book 1"))
    assert turns == [
        ("I need a pen: I check the desk 1 next. After it: sidetable 1, drawer 1, shelf 1 and 1 more.", "go to desk 1"),
        ("There is no pen on the desk 1. I need a pen: I check the sidetable 1 next. After it: drawer 1, shelf 1, "
         "shelf 2.", "go to sidetable 1"),
        ("There is no pen on the sidetable 1. I need a pen: I check the drawer 1 next. After it: shelf 1, shelf 2.",
         "go to drawer 1"),
        ("The drawer 1 is closed. I open it to look for a pen inside.", "open drawer 1"),
        ("I see the pen 1 in the drawer 1. I take it.", "take pen 1 from drawer 1"),
        ("I have the pen 1; it goes on the shelf 1. I go to the shelf 1.", "go to shelf 1"),
        ("I put the pen 1 on the shelf 1.", "move pen 1 to shelf 1")]
    start = room(drawer_1="pen 1", desk_1="book 1")
    assert SearchingExpert(PEN_TO_SHELF, PRIOR).plan(start, SearchKnowledge.start(start)) == [a for _, a in turns]


def test_where_the_object_is_changes_nothing_before_it_is_seen():
    in_drawer = [a for _, a in play(PEN_TO_SHELF, room(drawer_1="pen 1"))]
    on_sidetable = [a for _, a in play(PEN_TO_SHELF, room(sidetable_1="pen 1"))]
    assert in_drawer == ["go to desk 1", "go to sidetable 1", "go to drawer 1", "open drawer 1",
                         "take pen 1 from drawer 1", "go to shelf 1", "move pen 1 to shelf 1"]
    assert on_sidetable == in_drawer[:2] + ["take pen 1 from sidetable 1", "go to shelf 1", "move pen 1 to shelf 1"]


def test_a_wrong_object_in_hand_is_put_back_and_a_second_one_goes_beside_the_first():
    world = room(sidetable_1="pen 2,book 1", desk_1="pen 1")
    expert, known = SearchingExpert(PEN_TO_SHELF, PRIOR), SearchKnowledge.start(world)
    for action in ["go to sidetable 1", "take book 1 from sidetable 1"]:
        world.apply(action)
        known.observe(world, action, valid=True)
    assert expert.step(known) == ("The book 1 is not what the task needs. I put it down on the sidetable 1.",
                                  "move book 1 to sidetable 1")
    assert expert.plan(world, known) == ["move book 1 to sidetable 1", "take pen 2 from sidetable 1", "go to shelf 1",
                                         "move pen 2 to shelf 1"]
    two = AlfredTask("pick_two_obj_and_place", "pen", "shelf")
    assert [a for _, a in play(two, room(sidetable_1="pen 2", desk_1="pen 1"))] == [
        "go to desk 1", "take pen 1 from desk 1", "go to shelf 1", "move pen 1 to shelf 1", "go to sidetable 1",
        "take pen 2 from sidetable 1", "go to shelf 1", "move pen 2 to shelf 1"]


def test_a_lamp_is_searched_for_once_the_object_is_in_hand():
    look = AlfredTask("look_at_obj_in_light", "pen", "desklamp")
    assert [a for _, a in play(look, room(desk_1="pen 1", shelf_2="desklamp 1"))] == [
        "go to desk 1", "take pen 1 from desk 1", "go to sidetable 1", "go to drawer 1", "open drawer 1",
        "go to shelf 1", "go to shelf 2", "use desklamp 1"]


def test_the_oracle_corrects_with_the_experts_own_reason():
    facts = StepFacts(rejected=False, repeated=True, plan_before=4, plan_after=4, expert_before="go to sidetable 1",
                      expert_after="go to sidetable 1",
                      expert_plan_after=["go to sidetable 1", "take pen 1 from sidetable 1"],
                      expert_thought_after="There is no pen on the desk 1. I need a pen: I check the sidetable 1 next.")
    step = AgentStep(env="alfworld", split="train", task_id="t", instruction="", task="put a pen on shelf.",
                     history=[], reply="Action: go to desk 1", thought=None, action="go to desk 1",
                     observation="You arrive at desk 1. On the desk 1, you see nothing.", facts=facts)
    lines = render_facts(step)
    assert "Expert's reason for its next action: There is no pen on the desk 1. I need a pen: I check the " \
           "sidetable 1 next." in lines
    assert oracle_verdict(teacher_prompt(step)[-1]["content"]) == {
        "verdict": "wrong", "reflection": "I had already looked at the desk 1: going back there shows me nothing new.",
        "thought": "There is no pen on the desk 1. I need a pen: I check the sidetable 1 next.",
        "action": "go to sidetable 1"}
