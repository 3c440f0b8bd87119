"""envs.py on the real ScienceWorld engine (two JVMs shared by the whole file) and on a fake env
for engine crashes."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import data
import envs
import oracle
import rollout
import teacher
import teacher_eval
from envs import AgentStep, StepFacts
from teacher import Verdict

TASKS = ["lifespan-longest-lived", "find-non-living-thing", "chemistry-mix-paint-secondary-color"]
LIFESPAN, FIND = "lifespan-longest-lived/63", "find-non-living-thing/150"
PAINT = "chemistry-mix-paint-secondary-color/25"
GARBAGE = "Thought: I will fly.\nAction: fly to the moon"
TRAJECTORY_KEYS = {"id", "env", "split", "task", "source", "messages", "reward", "success", "steps", "end_reason",
                   "errors", "corrections", "taken_back", "invalid_actions", "unjudged", "teacher_calls",
                   "teacher_latency_s"}


@pytest.fixture(scope="session")
def sciworlds():
    """Two engines started side by side: "dev" with the task limits, "seen" (= dev) limited to 12 steps."""
    with ThreadPoolExecutor(2) as pool:
        pair = list(pool.map(lambda kw: envs.make_env("sciworld", tasks=TASKS, **kw),
                             [{"split": "dev"}, {"split": "seen", "max_steps": 12}]))
    yield pair
    for env in pair:
        env.close()


@pytest.fixture(scope="session")
def sciworld(sciworlds):
    return sciworlds[0]


@pytest.fixture(scope="session")
def golden(sciworld):
    return {tid: rollout.golden_trajectory(sciworld, tid) for tid in (LIFESPAN, FIND, PAINT)}


def gold_actions(traj):
    return [m["content"].removeprefix("Action: ") for m in traj["messages"] if m["role"] == "assistant"]


class Lent:
    """A session env lent to run_episodes, which closes its envs when done: here closing keeps
    the JVM for the next test. Counts the expert's calls."""

    def __init__(self, env):
        self.env, self.expert_calls = env, 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def expert_action(self):
        self.expert_calls += 1
        return self.env.expert_action()

    def expert_plan(self):
        self.expert_calls += 1
        return self.env.expert_plan()

    def close(self):
        pass


def lender(pool):
    lent, lock = [], threading.Lock()

    def factory():
        with lock:
            lent.append(Lent(pool[len(lent)]))
            return lent[-1]
    return factory, lent


def assert_well_formed(traj):
    assert set(traj) == TRAJECTORY_KEYS
    roles = [m["role"] for m in traj["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * traj["steps"]
    assert traj["messages"][0]["content"] == envs.SCIWORLD_INSTRUCTION
    assert traj["messages"][1]["content"].startswith("Your task is to")
    assert all(not m["loss"] for m in traj["messages"] if m["role"] != "assistant")
    assert traj["id"] == f"sciworld/dev/{traj['task']}" and traj["split"] == "dev"

# ----------------------------------------------------------------------------- the interface


def test_bad_names_fail_before_java_starts():
    with pytest.raises(ValueError, match="unknown environment 'scienceworld'; the environments are"):
        envs.make_env("scienceworld", "dev")
    with pytest.raises(ValueError, match="split must be one of .*'unseen'.*got 'valid'"):
        envs.make_env("sciworld", "valid")
    with pytest.raises(ValueError, match=r"unknown tasks \['find-a-unicorn'\]"):
        envs.make_env("sciworld", "dev", tasks=["boil", "find-a-unicorn"])


@pytest.mark.slow
def test_task_ids_come_from_the_engine_split(sciworlds):
    dev, seen = sciworlds
    assert dev.split == seen.split == "dev"
    ids = dev.task_ids()
    assert len(ids) == 31 + 75 + 9
    assert (ids[0], ids[-1]) == ("lifespan-longest-lived/62", "chemistry-mix-paint-secondary-color/26")
    start = time.perf_counter()
    assert seen.task_ids() == ids  # the variation lists are cached per process
    assert time.perf_counter() - start < 0.1
    splits = envs._SPLIT_VARIATIONS["find-non-living-thing"]
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [150, 75, 75]
    assert not set(splits["train"]) & set(splits["dev"]) and not set(splits["dev"]) & set(splits["test"])
    with pytest.raises(KeyError, match="SciWorld dev: no task 'find-non-living-thing/3'"):
        dev.reset("find-non-living-thing/3")  # a train variation
    dev.reset(LIFESPAN)
    assert (dev.max_steps, seen.max_steps) == (10, 12)  # the task's limit unless max_steps is given
    dev.reset(FIND)
    assert dev.max_steps == 15


@pytest.mark.slow
@pytest.mark.parametrize("task_id", [LIFESPAN, FIND, PAINT])
def test_the_gold_path_scores_100_through_the_interface(golden, task_id):
    traj = golden[task_id]
    assert_well_formed(traj)
    assert (traj["source"], traj["reward"], traj["success"], traj["end_reason"]) == ("golden", 1.0, True, "done")
    assistant = [m for m in traj["messages"] if m["role"] == "assistant"]
    assert all(m["content"].startswith("Action: ") and m["loss"] for m in assistant)
    assert len(assistant) == traj["steps"] >= 3  # the engine's gold paths vary from one generation to the next


@pytest.mark.slow
def test_lifespan_gold_path_looks_around_after_arriving_outside(golden):
    actions = gold_actions(golden[LIFESPAN])
    i = actions.index("go to outside")
    assert actions[i + 1] == "look around" and actions[i + 2].startswith("focus on")
    assert "a baby elephant" in golden[LIFESPAN]["messages"][2 * i + 5]["content"]  # what the look showed
    path = ["teleport to outside", "focus on x", "go to outside", "look around", "wait1"]
    assert envs.look_after_arriving_outside(path) == ["teleport to outside", "look around", "focus on x",
                                                      "go to outside", "look around", "wait1"]


@pytest.mark.slow
def test_fast_step_matches_the_stock_step(sciworld, golden):
    gold = gold_actions(golden[FIND])  # FIND starts in the kitchen
    actions = ["look at cup", "pick up sky", "teleport to bathroom", "0", "teleport to kitchen"] + gold
    first = sciworld.reset(FIND)
    start = time.perf_counter()
    ours = [sciworld.step(a) for a in actions]
    ours_s = time.perf_counter() - start
    stock = sciworld.engine
    stock.load("find-non-living-thing", 150, "easy")
    stock_first, _ = stock.reset()
    start = time.perf_counter()
    theirs = [stock.step(a) for a in actions]
    stock_s = time.perf_counter() - start
    assert first.startswith("Your task is to find a(n) non-living thing.")
    assert first.split("\n\n", 1)[1] == stock_first  # the same text: things listed in the same order
    for action, (obs, reward, done, info), (stock_obs, _, stock_done, stock_info) in zip(actions, ours, theirs):
        assert obs == stock_obs, action
        assert (info["engine_score"], done) == (stock_info["score"], stock_done), action
        assert reward == info["score"] == max(stock_info["score"], 0) / 100
    assert [info["invalid"] for *_, info in ours] == [False, True, False, True, False] + [False] * len(gold)
    assert ours[3][0] == "No known action matches that input."
    assert ours[-1][1:] == (1.0, True, {"score": 1.0, "won": True, "invalid": False, "question": False,
                                        "engine_score": 100})
    assert ours_s < stock_s, (ours_s, stock_s)


@pytest.mark.slow
def test_invalid_marks_what_the_engine_did_not_understand_or_refused(sciworld):
    sciworld.reset(FIND)

    def step(action):
        obs, _, _, info = sciworld.step(action)
        return obs, info["invalid"], info["question"]
    assert step("open fridge") == ("The fridge is now open.", False, False)
    question = ("Ambiguous request: Please enter the number for the action you intended (or blank to cancel):\n"
                "0:\tmix wood cup (in fridge, in kitchen)\n1:\tmix glass cup (in table, in kitchen)\n")
    assert step("mix cup") == (question, False, True)  # the same numbering in every load and JVM
    obs, invalid, _ = step("the glass one")  # not a number: the engine gives up
    assert obs.startswith("Unknown action.  Type 'help'") and invalid
    step("mix cup")
    assert step("0") == ("There is only one thing (orange juice)", False, False)
    assert step("fly to the moon") == ("No known action matches that input.", True, False)
    assert step("go to greenhouse") == ("No known action matches that input.", True, False)  # no door to it
    assert step("go to kitchen") == ("It's not clear how to get there from here.", True, False)  # already here
    assert step("pick up air") == ("You can't pick up a gas directly.", True, False)


@pytest.mark.slow
def test_the_expert_follows_the_gold_path_then_rejoins_it_by_teleport(sciworld, monkeypatch):
    monkeypatch.setattr(envs, "_GOLD_PATHS", {})  # generated here (reload + replay), not by another test
    sciworld.reset(LIFESPAN)  # in the kitchen, next to the outside
    rest = ["look around", "focus on elephant", "wait1"]  # off the gold path: named without its life stage
    assert sciworld.expert_action() == "open door to outside"  # the gold path's own harmless door opening
    assert sciworld.expert_plan() == ["teleport to outside"] + rest  # each change of room one teleport
    sciworld.step("open door to outside")
    assert sciworld.expert_action() == "go to outside"
    sciworld.step("look at sky")  # rejected: the episode has left the gold path
    assert sciworld.expert_action() == "teleport to outside" and sciworld.expert_plan() == ["teleport to outside"] + rest
    sciworld.step("teleport to bathroom")  # another wrong room: the plan is no longer
    assert sciworld.expert_plan() == ["teleport to outside"] + rest
    sciworld.step("go to kitchen")  # walking back does not fool it: it looks where the agent is
    assert sciworld.expert_plan() == ["teleport to outside"] + rest
    sciworld.step("teleport to outside")
    assert sciworld.expert_plan() == rest
    sciworld.step("look at axe")  # a look the plan does not need: nothing to check
    assert sciworld.expert_plan() == rest
    assert sciworld.step("focus on baby baby elephant")[2] is True  # its look around skipped: the focus wins
    assert (sciworld.expert_plan(), sciworld.expert_action()) == ([], None)


@pytest.mark.slow
def test_the_expert_takes_the_agents_choice_or_knows_the_task_is_lost(sciworld):
    sciworld.reset(FIND)
    sciworld.step("focus on chair")  # not the gold path's lighter, but a non-living thing too
    assert sciworld.expert_plan() == ["move chair to red box"]  # checked in a reloaded copy of the episode
    assert sciworld.step("move chair to red box")[1:3] == (1.0, True)
    sciworld.reset(FIND)
    sciworld.step("focus on air")  # non-living too, but a gas: it cannot go into the box
    assert sciworld.expert_plan() is None and sciworld.expert_action() is None
    sciworld.reset("find-plant/150")  # the gold path takes the apple tree in flower pot 8
    for action in ["teleport to greenhouse", "focus on pea plant"]:
        sciworld.step(action)
    plan = ["pick up flower pot 9", "teleport to kitchen",
            "move flower pot 9 containing pea plant and soil in inventory to red box"]
    assert sciworld.expert_plan() == plan  # the pea plant is in flower pot 9
    assert [sciworld.step(action)[1:3] for action in plan][-1] == (1.0, True)
    sciworld.reset("lifespan-longest-lived/62")
    sciworld.step("teleport to outside")
    assert sciworld.step("focus on baby ant")[1:4] == (0.0, True, {"score": 0.0, "won": False, "invalid": False,
                                                                  "question": False, "engine_score": -100})
    assert sciworld.expert_plan() is None  # the engine failed the task


@pytest.mark.slow
def test_undo_takes_the_last_step_back_and_the_expert_with_it(sciworld):
    """A failed focus, the agent's choice the expert took, a dead end: each taken back, the engine and
    the expert are where they were before it, and the expert's plan from there wins."""
    sciworld.reset("lifespan-longest-lived/62")
    sciworld.step("teleport to outside")
    plan = sciworld.expert_plan()
    assert sciworld.step("focus on baby ant")[2] is True and sciworld.expert_plan() is None  # the task failed
    sciworld.undo()
    assert (sciworld.expert_plan(), sciworld.expert_action()) == (plan, "look around")
    assert [sciworld.step(action)[1:3] for action in plan][-1] == (1.0, True)
    sciworld.reset(FIND)
    plan = sciworld.expert_plan()
    sciworld.step("focus on chair")
    assert sciworld.expert_plan() == ["move chair to red box"]  # the expert took the agent's choice
    sciworld.undo()
    assert sciworld.expert_plan() == plan
    sciworld.step("focus on air")
    assert sciworld.expert_plan() is None  # a dead end: a gas cannot go into the box
    sciworld.undo()
    assert sciworld.step("look around")[0].startswith("This room is called the kitchen.")
    assert sciworld.expert_plan() == plan[1:]
    assert [sciworld.step(action)[1:3] for action in plan[1:]][-1] == (1.0, True)
    sciworld.reset(FIND)
    with pytest.raises(RuntimeError, match="undo\\(\\) without a step"):
        sciworld.undo()


@pytest.mark.slow
def test_the_expert_names_living_things_as_they_are_when_time_has_passed(sciworld):
    """A gold path names a living thing by its stage when it was recorded ("adult cherry tree"); twelve
    waits later the plant has grown and the engine no longer knows that name. The expert's plan names
    it without the stage, which the engine knows at any time, and wins."""
    gold = [data.parse_action(m["content"]) for m in rollout.golden_trajectory(sciworld, "find-plant/150")["messages"]
            if m["role"] == "assistant"]
    assert "focus on adult apple tree" in gold
    sciworld.reset("find-plant/150")
    for _ in range(12):
        sciworld.step("wait1")
    plan = sciworld.expert_plan()
    assert "focus on apple tree" in plan
    assert [sciworld.step(action)[1:3] for action in plan][-1] == (1.0, True)
    assert envs.without_life_stages("move egg blue jay egg in inventory to red box") == \
        "move blue jay in inventory to red box"
    assert envs.without_life_stages("focus on baby baby wolf") == "focus on wolf"
    assert envs.without_life_stages("move egg to red box") == "move egg to red box"  # the egg is the name


@pytest.mark.slow
def test_a_task_gives_the_same_observations_and_gold_path_whatever_the_engine_played_before(sciworlds, monkeypatch):
    """The engine used to list things, build worlds and choose gold paths in Java's identity-hash
    order (which depends on the JVM thread and on what it hashed before), and cached the routes of
    its room searches across loads: a task played again in the same JVM, or after other tasks, gave
    other observations and another gold path."""
    monkeypatch.setattr(envs, "_GOLD_PATHS", {})
    tasks = ["find-plant/150", "test-conductivity/451", FIND]

    def play(env, task_id):
        envs._GOLD_PATHS.clear()  # generated by this engine
        first = env.reset(task_id)
        gold = env._gold_path()
        return gold, [first] + [env.step(action)[0] for action in gold]

    first, second = sciworlds
    reference = {t: play(first, t) for t in tasks}
    play(second, "test-conductivity/450")  # the same start room: its room search is cached by the engine
    with ThreadPoolExecutor(1) as pool:  # another Python thread: another py4j connection and JVM thread
        for _ in range(2):  # and each task played twice in the same engine
            assert {t: pool.submit(play, second, t).result() for t in reversed(tasks)} == reference
    assert reference["find-plant/150"][0] == [
        "open door to hallway", "go to hallway", "open door to greenhouse", "go to greenhouse", "look around",
        "focus on adult apple tree", "pick up flower pot 8", "open door to hallway", "go to hallway",
        "open door to kitchen", "go to kitchen", "move flower pot 8 containing apple tree and soil in inventory to red box"]

# ----------------------------------------------------------------------------- episodes


@pytest.mark.parametrize("reply, action", [
    ("Thought: go.\nAction: go to kitchen", "go to kitchen"),
    ("Action: open door\nObservation: fake\nAction:  look around  \nmore text", "look around"),
    ("Action:\n  pick up cup\n", "pick up cup"),
    ("Thought: I only think.", None),
    ("Thought: t\nAction:   ", None),
    ("", None),
])
def test_parse_action(reply, action):
    assert data.parse_action(reply) == action


def test_parse_thought():
    assert data.parse_thought("Reflection: r\nThought: I go.\nAction: go to kitchen") == "I go."
    assert data.parse_thought("Thought: no action here") == "no action here"
    assert data.parse_thought("Action: look around") is None


@pytest.mark.slow
def test_run_episodes_plays_to_the_end(sciworlds, golden):
    gold = {f"sciworld/dev/{tid}": gold_actions(golden[tid]) for tid in (LIFESPAN, FIND)}
    calls = []

    def policy(histories, keys):
        calls.append(list(keys))
        replies = []
        for history, key in zip(histories, keys):
            n = sum(m["role"] == "assistant" for m in history)
            replies.append(f"Thought: step {n}.\nAction: {gold[key][n]}" if key in gold else GARBAGE)
        return replies

    factory, lent = lender(sciworlds)
    finished = []
    garbage = "find-non-living-thing/151"
    trajs = rollout.run_episodes(policy, factory, [LIFESPAN, FIND, "find-non-living-thing/152", garbage], parallel=2,
                              max_invalid=2, done_ids={"find-non-living-thing/152"}, on_episode=finished.append)
    assert [t["task"] for t in trajs] == [LIFESPAN, FIND, garbage]
    assert sorted(t["task"] for t in finished) == sorted([LIFESPAN, FIND, garbage])
    # one policy call per step for all live episodes; the garbage one starts in the first freed slot
    lengths = [len(g) for g in gold.values()]
    shorter, gap = min(lengths), abs(lengths[0] - lengths[1])
    assert [len(c) for c in calls] == [2] * (shorter + min(gap, 2)) + [1] * abs(gap - 2)
    assert f"sciworld/dev/{garbage}" in calls[shorter] and len(calls[shorter]) == 2 - (gap == 0)
    assert sum(env.expert_calls for env in lent) == 0  # no judge, no expert
    for t in trajs:
        assert_well_formed(t)
        assert (t["source"], t["errors"], t["corrections"], t["unjudged"], t["teacher_calls"]) == ("agent", 0, 0, 0, 0)
    assert [(t["end_reason"], t["success"], t["reward"], t["steps"], t["invalid_actions"]) for t in trajs] == [
        ("done", True, 1.0, len(gold[trajs[0]["id"]]), 0), ("done", True, 1.0, len(gold[trajs[1]["id"]]), 0),
        ("invalid_actions", False, 0.17, 2, 2)]  # find-non-living-thing starts at 17 points
    assert trajs[0]["messages"][2] == {"role": "assistant", "loss": True,
                                       "content": f"Thought: step 0.\nAction: {gold[trajs[0]['id']][0]}"}
    assert trajs[2]["messages"][3]["content"] == "No known action matches that input."


@pytest.mark.slow
def test_a_reply_without_action_uses_a_step_until_max_steps(sciworlds):
    def policy(histories, keys):
        return ["I am not sure what to do." if len(histories[0]) == 2 else "Thought: look.\nAction: look around"]

    factory, _ = lender(sciworlds[1:])  # the engine with max_steps=12
    [traj] = rollout.run_episodes(policy, factory, [FIND], parallel=4)
    assert_well_formed(traj)
    assert (traj["end_reason"], traj["steps"], traj["invalid_actions"], traj["success"]) == ("max_steps", 12, 1, False)
    assert traj["messages"][3]["content"] == rollout.INVALID_FORMAT
    assert traj["messages"][5]["content"].startswith("This room is called the kitchen.")


def corrected_turn(action):
    return f"Reflection: That was not an action.\nThought: I {action}.\nAction: {action}"


def wrong(step, calls=2):
    action = step.facts.expert_after
    return Verdict("wrong", reflection="That was not an action.", thought=f"I {action}.", action=action,
                   content=corrected_turn(action), calls=calls, latency_s=0.25)


def expert_of(lent, key):
    """The expert's next action in the lent env playing episode `key` (not counted as a judge's call)."""
    return next(e.env for e in lent if key.endswith("/".join(map(str, e.env._episode)))).expert_action()


@pytest.mark.slow
def test_the_judge_sees_the_facts_and_corrects_wrong_steps(sciworlds):
    steps, both_first_steps = [], threading.Barrier(2, timeout=10)
    factory, lent = lender(sciworlds)

    def policy(histories, keys):
        return ["Thought: I should look at the sky.\nAction: look at sky" if len(history) == 2
                else f"Thought: next.\nAction: {expert_of(lent, key)}" for history, key in zip(histories, keys)]

    def judge(step):
        steps.append(step)
        if step.reply.endswith("look at sky"):
            both_first_steps.wait()  # both episodes are judged at once, or this times out
            return wrong(step)
        if step.task_id == FIND:
            return Verdict("unjudged", reason="teacher timed out", calls=3, latency_s=1.0)
        return Verdict("correct", calls=1, latency_s=0.1)

    lifespan, find = rollout.run_episodes(policy, factory, [LIFESPAN, FIND], parallel=2, judge=judge)
    # judged: the agent's steps but the last (it won); the expert is asked for its plan and action before
    # and after each, and before each last step
    assert sum(env.expert_calls for env in lent) == 4 * len(steps) + 2 * 2
    for traj, expert in ((lifespan, "teleport to outside"), (find, "look around")):
        assert_well_formed(traj)
        error, correction = dict(traj["messages"][2]), traj["messages"][4]
        judged = next(s for s in steps if s.task_id == traj["task"] and s.action == "look at sky")
        assert error.pop("facts") == {name: getattr(judged.facts, name) for name in rollout.RECORDED_FACTS}
        assert error == {"role": "assistant", "content": "Thought: I should look at the sky.\nAction: look at sky",
                         "loss": False, "error": True}
        assert traj["messages"][3]["content"] == "No known action matches that input."
        assert correction == {"role": "assistant", "loss": True, "reflection": "That was not an action.",
                              "thought": f"I {expert}.", "action": expert,
                              "content": corrected_turn(expert)}
        assert traj["messages"][5]["content"] != "No known action matches that input."
        assert sum(m.get("error", False) for m in traj["messages"]) == 1
        assert (traj["source"], traj["end_reason"], traj["success"], traj["errors"], traj["corrections"]) == (
            "reflected", "done", True, 1, 1)
    assert lifespan["messages"][2]["facts"] == {  # what the judge was shown, kept in the record
        "rejected": True, "repeated": False, "irreversible": False, "plan_before": 4, "plan_after": 4,
        "expert_before": "open door to outside", "expert_after": "teleport to outside"}
    # lifespan: sky (wrong), teleport (the correction), look around (correct), focus (won: not judged)
    assert (lifespan["steps"], lifespan["teacher_calls"], lifespan["unjudged"], lifespan["teacher_latency_s"]) == (
        4, 3, 0, 0.35)
    # find: sky (wrong), look around (the correction), focus on lighter (unjudged), move it (won)
    assert (find["steps"], find["teacher_calls"], find["unjudged"], find["teacher_latency_s"]) == (4, 5, 1, 1.25)
    first = next(s for s in steps if s.task_id == LIFESPAN)
    plan = ["teleport to outside", "look around", "focus on elephant", "wait1"]
    assert first == AgentStep(
        env="sciworld", split="dev", task_id=LIFESPAN, instruction=envs.SCIWORLD_INSTRUCTION,
        task=lifespan["messages"][1]["content"], history=lifespan["messages"][:2],
        reply="Thought: I should look at the sky.\nAction: look at sky", thought="I should look at the sky.",
        action="look at sky", observation="No known action matches that input.", reward=0.0, done=False,
        facts=StepFacts(rejected=True, repeated=False, irreversible=False, plan_before=4, plan_after=4,
                        expert_before="open door to outside", expert_after="teleport to outside",
                        expert_plan_after=plan),
        undo_if_wrong=False)


def oracle_judge(step):
    """The oracle teacher's verdict on a step, as TeacherClient.judge returns it, without HTTP."""
    verdict = Verdict(**oracle.oracle_verdict(teacher.teacher_prompt(step)[-1]["content"]))
    if verdict.verdict == "wrong":
        verdict.content = data.render_turn(verdict.action, verdict.thought, verdict.reflection)
    return verdict


@pytest.mark.slow
def test_the_oracle_judges_by_what_the_engine_knows(sciworlds):
    """The verdict rule on the real engine: harmless steps and another way are not wrong; a step the
    engine rejected, one that cannot be undone, one that leads away or repeats itself without effect
    is; no correction is rejected, and a step that cannot be undone ends the episode."""
    script = {
        LIFESPAN: ["open door to outside",  # the gold path's own no-op door opening
                   "look around",  # harmless
                   "go to outside",  # another way than the teleport the expert plans now
                   "teleport to kitchen",  # leaves the room of the next step: wrong
                   "focus on baby baby elephant"],  # after the correction, it wins
        FIND: ["open door to hallway",  # a harmless no-op the gold path does not contain
               "open door to hallway",  # the same again, same answer, no progress: wrong
               "open fridge",  # a step the plan does not contain: checked in the engine, the plan still wins
               "mix cup",  # the glass cup or the wood cup in the fridge? Not judged before the answer
               "1",  # mixes the empty glass cup: harmless too
               "focus on air"],  # a gas cannot go into the box: the task is lost, the episode ends
        "lifespan-longest-lived/62": ["teleport to outside", "focus on baby ant"]}  # the engine fails the task
    judged = []

    def policy(histories, keys):
        return [f"Action: {script[key.split('/', 2)[2]][sum(m['role'] == 'assistant' and 'reflection' not in m for m in h)]}"
                for h, key in zip(histories, keys)]

    def judge(step):
        judged.append((step.task_id, step.action, oracle_judge(step)))
        return judged[-1][2]

    factory, _ = lender(sciworlds)
    trajs = rollout.run_episodes(policy, factory, list(script), parallel=2, judge=judge)
    verdicts = {t: [(a, v.verdict, v.reflection or None) for task, a, v in judged if task == t] for t in script}
    assert verdicts[LIFESPAN] == [
        ("open door to outside", "correct", None), ("look around", "correct", None), ("go to outside", "correct", None),
        ("teleport to kitchen", "wrong", "I left the outside, where my next step has to happen.")]
    assert verdicts[FIND] == [
        ("open door to hallway", "correct", None),
        ("open door to hallway", "wrong",
         "I did the same thing before and got the same answer; doing it again gets me nowhere."),
        ("open fridge", "correct", None), ("1", "correct", None),
        ("focus on air", "wrong", "That step cannot be undone, and it leaves no way to finish the task.")]
    assert verdicts["lifespan-longest-lived/62"] == [
        ("teleport to outside", "correct", None),
        ("focus on baby ant", "wrong", "That was the wrong thing to focus on: it failed the task, and a focus "
                                       "cannot be undone.")]
    outcome = {t["task"]: (t["success"], t["end_reason"], t["errors"], t["corrections"]) for t in trajs}
    assert outcome == {LIFESPAN: (True, "done", 1, 1), FIND: (False, "irreversible", 2, 1),
                       "lifespan-longest-lived/62": (False, "done", 1, 0)}
    corrections = [(m, o) for t in trajs for m, o in zip(t["messages"], t["messages"][1:]) if "reflection" in m]
    assert [m["action"] for m, _ in corrections] == ["teleport to outside", "look around"]
    assert [m["thought"] for m, _ in corrections] == ["What I need next is outside, so I teleport there.",
                                                      "I look around to see what is here."]
    assert not any(o["content"].startswith(envs.SCIWORLD_INVALID) for _, o in corrections)


@pytest.mark.slow
def test_a_wrong_step_that_cannot_be_undone_is_taken_back_and_corrected(sciworlds):
    """With undo_irreversible, the oracle is told that a wrong irreversible step will be taken back;
    the run takes it back in the engine, the correction runs from the state before it, and the episode
    goes on to win. The wrong step and its observation stay in the trajectory, masked; a replay of
    the recorded episode (teacher-eval's) rebuilds every step as the judge saw it."""
    script = {"lifespan-longest-lived/62": ["teleport to outside", "focus on baby ant"],  # the engine fails the task
              FIND: ["focus on air"]}  # a dead end: a gas cannot go into the box
    judged, factory, lent = [], *lender(sciworlds)

    def policy(histories, keys):
        replies = []
        for history, key in zip(histories, keys):
            done = sum(m["role"] == "assistant" and "reflection" not in m for m in history)
            todo = script[key.split("/", 2)[2]]
            replies.append(f"Action: {todo[done] if done < len(todo) else expert_of(lent, key)}")
        return replies

    def judge(step):
        judged.append(step)
        return oracle_judge(step)

    trajs = rollout.run_episodes(policy, factory, list(script), parallel=2, judge=judge, undo_irreversible=True)
    wrong_steps = [s for s in judged if s.facts.irreversible]
    assert sorted((s.action, s.undo_if_wrong) for s in wrong_steps) == [("focus on air", True),
                                                                                ("focus on baby ant", True)]
    assert all(teacher.TAKEN_BACK in teacher.teacher_prompt(s)[-1]["content"] for s in wrong_steps)
    ant, air = trajs
    for traj, wrong_action, observation, reflection, correction in (
            (ant, "focus on baby ant", "You focus on the baby ant.",
             "That was the wrong thing to focus on: focusing on it fails the task.", "look around"),
            (air, "focus on air", "You focus on the air.", "That step leaves no way to finish the task.",
             "look around")):
        assert (traj["success"], traj["end_reason"], traj["errors"], traj["corrections"], traj["taken_back"]) == (
            True, "done", 1, 1, 1)
        i = next(i for i, m in enumerate(traj["messages"]) if m.get("error"))
        wrong_turn = dict(traj["messages"][i])
        assert wrong_turn.pop("facts") == {"rejected": False, "repeated": False, "irreversible": True,
                                           "plan_before": 3, "plan_after": None, "expert_before": "look around",
                                           "expert_after": None}
        assert wrong_turn == {"role": "assistant", "content": f"Action: {wrong_action}", "loss": False,
                              "error": True, "taken_back": True}
        assert traj["messages"][i + 1]["content"] == observation
        assert (traj["messages"][i + 2]["reflection"], traj["messages"][i + 2]["action"]) == (reflection, correction)
        assert traj["messages"][i + 3]["content"].startswith("This outside location is called the outside."
                                                             if traj is ant else "This room is called the")
        data.validate_trajectory(traj)
    env = sciworlds[0]
    for traj in trajs:
        replayed = teacher_eval.recorded_steps(env, traj)
        assert [oracle_judge(r["step"]).verdict for r in replayed] == [r["recorded"] for r in replayed]
        fixes = [(r["index"], oracle_judge(r["step"]).action, r["step"].undo_if_wrong)
                 for r in replayed if r["recorded"] == "wrong"]
        assert len(fixes) == 1 and all(teacher_eval.engine_accepts(env, traj, *fix) for fix in fixes)
    # without undo_irreversible, the same failed focus ends the episode (test_the_oracle_judges_by_what_the_engine_knows)


@pytest.mark.slow
def test_too_many_wrong_steps_end_the_episode(sciworlds):
    def policy(histories, keys):
        return ["Thought: I should look at the sky.\nAction: look at sky"] * len(histories)

    factory, _ = lender(sciworlds)
    [traj] = rollout.run_episodes(policy, factory, [LIFESPAN], judge=wrong, max_corrections=1)
    assert (traj["end_reason"], traj["steps"], traj["errors"], traj["corrections"]) == ("max_corrections", 3, 2, 1)
    assert [m.get("error", False) for m in traj["messages"] if m["role"] == "assistant"] == [True, False, True]
    assert traj["messages"][-1]["loss"] is False


class FakeEnv:
    """Succeeds in one step, except that task "crash" raises in step and "bad" in reset."""
    name, split, instruction, max_steps = "fake", "test", "Say anything.", 5

    def __init__(self, log):
        self.log, self.task_id = log, None
        log.append("created")

    def reset(self, task_id):
        if task_id == "bad":
            raise ValueError("no such game")
        self.task_id = task_id
        return f"Task {task_id}."

    def step(self, action):
        if self.task_id == "crash":
            raise RuntimeError("the engine died")
        return "Well done.", 1.0, True, {"score": 1.0, "won": True, "invalid": False}

    def close(self):
        self.log.append("closed")


def test_an_engine_error_ends_only_its_episode():
    log, finished = [], []
    trajs = rollout.run_episodes(lambda h, k: ["Action: win"] * len(h), lambda: FakeEnv(log),
                              ["a", "crash", "bad", "b"], parallel=1, on_episode=finished.append)
    assert [(t["task"], t["end_reason"], t["steps"], t["success"]) for t in trajs] == [
        ("a", "done", 1, True), ("crash", "env_error: RuntimeError: the engine died", 0, False),
        ("bad", "env_error: ValueError: no such game", 0, False), ("b", "done", 1, True)]
    assert [m["role"] for m in trajs[1]["messages"]] == ["system", "user"] and len(trajs[2]["messages"]) == 1
    assert log == ["created", "closed", "created", "closed", "created", "closed"]  # re-created after each error
    assert len(finished) == 4
    with pytest.raises(ValueError, match="policy returned 2 replies for 1 histories"):
        rollout.run_episodes(lambda h, k: ["Action: a", "Action: b"], lambda: FakeEnv([]), ["a"])


def test_summarize():
    def traj(env, split, reward, success, steps):
        return {"env": env, "split": split, "reward": reward, "success": success, "steps": steps}

    summary = envs.summarize([
        traj("sciworld", "test", 1.0, True, 4), traj("sciworld", "test", 0.5, False, 10),
        traj("alfworld", "valid_seen", 0.0, False, 40), traj("alfworld", "valid_seen", 1.0, True, 8)])
    assert summary == {
        "alfworld/valid_seen": {"metric": 50.0, "episodes": 2, "success_rate": 50.0, "mean_reward": 50.0,
                                "mean_steps": 24.0},
        "sciworld/test": {"metric": 75.0, "episodes": 2, "success_rate": 50.0, "mean_reward": 75.0, "mean_steps": 7.0}}


def test_family_counts():
    def traj(env, task, success):
        return {"env": env, "task": task, "success": success}

    assert envs.family_counts([
        traj("sciworld", "find-plant/3", True), traj("sciworld", "lifespan-longest-lived/1", False),
        traj("sciworld", "find-plant/7", False), traj("webshop", "12", True),
        traj("alfworld", "train/pick_and_place_simple-Pen-None-Drawer-2/trial_1", True)]) == {
        "find-plant": {"episodes": 2, "success": 1}, "lifespan-longest-lived": {"episodes": 1, "success": 0},
        "pick_and_place_simple": {"episodes": 1, "success": 1}, "webshop": {"episodes": 1, "success": 1}}
