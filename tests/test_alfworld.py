"""The real ALFWorld engine (alfworld 0.4.2) on the hand-made games shipped in alfworld_data/."""
import collections
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

import alfworld_games
import data
import envs
import oracle
import rollout
from envs import ALFWORLD_SHIPPED, AlfWorldEnv

pytestmark = pytest.mark.slow  # ALFWorld's engine and its planner

TASK_TYPES = {"pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
              "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_two_obj_and_place"}
PEN_GAME = "valid_seen/pick_and_place_simple-Pen-None-Drawer-2/trial_1"


def shipped(split, **options):
    return AlfWorldEnv(split, data_dir=ALFWORLD_SHIPPED, **options)


@pytest.mark.parametrize("split, per_type", [("train", 3), ("valid_seen", 1), ("valid_unseen", 1)])
def test_every_split_ships_every_task_type(split, per_type):
    ids = shipped(split).task_ids()
    assert shipped(split.removeprefix("valid_")).task_ids() == ids  # "seen", "unseen": aliases as in SciWorld
    assert all(tid.startswith(split + "/") and tid.endswith("/trial_1") for tid in ids)
    assert collections.Counter(tid.split("/")[1].split("-")[0] for tid in ids) == {t: per_type for t in TASK_TYPES}


def test_shipped_games_are_what_alfworld_games_py_writes():
    for game in alfworld_games.GAMES:
        folder, traj, problem = alfworld_games.game_files(*game)
        with open(os.path.join(ALFWORLD_SHIPPED, "json_2.1.1", folder, "initial_state.pddl")) as f:
            assert f.read() == problem, folder
        with open(os.path.join(ALFWORLD_SHIPPED, "json_2.1.1", folder, "traj_data.json")) as f:
            assert json.load(f) == traj, folder
    shipped_ids = [tid for split in ("train", "valid_seen", "valid_unseen") for tid in shipped(split).task_ids()]
    assert len(shipped_ids) == len(alfworld_games.GAMES) == 30


def test_data_dir_is_ALFWORLD_DATA_else_the_shipped_games(monkeypatch, tmp_path):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    assert AlfWorldEnv("train").data_dir == ALFWORLD_SHIPPED
    # what `import alfworld` sets when the variable is unset: its download folder, here without games
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / ".cache" / "alfworld"))
    assert AlfWorldEnv("train").data_dir == ALFWORLD_SHIPPED
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"no folder {tmp_path}/json_2.1.1/train"):
        AlfWorldEnv("train")


def test_reset_shows_the_room_and_task_and_is_deterministic():
    env = shipped("valid_seen")
    first = env.reset(PEN_GAME)
    assert first == ("You are in the middle of a room. Looking quickly around you, you see a bed 1, a desk 1, "
                     "a drawer 2, a drawer 1, a garbagecan 1, a shelf 1, and a sidetable 1.\n\n"
                     "Your task is to: put some pen on drawer.")
    obs = env.step("go to sidetable 1")[0]
    assert obs == "You arrive at sidetable 1. On the sidetable 1, you see a cellphone 1, and a pen 1."
    assert env.reset(PEN_GAME) == first
    with pytest.raises(KeyError, match="no game 'valid_seen/nope'"):
        env.reset("valid_seen/nope")
    env.close()


def test_step_reports_invalid_commands_and_the_win():
    env = shipped("valid_seen", expert="planner")
    env.reset(PEN_GAME)
    assert env.expert_action() == "go to sidetable 1"
    plan = ["go to sidetable 1", "take pen 1 from sidetable 1", "go to drawer 2", "open drawer 2", "move pen 1 to drawer 2"]
    assert env.expert_plan() == plan  # the planner's, from the current state
    # ALFWorld before 0.4 said "put X in/on Y"; 0.4.2 only understands "move X to Y"
    nothing = ("Nothing happens.", 0.0, False, {"score": 0.0, "won": False, "invalid": True, "revisit": False})
    assert env.step("put pen 1 in drawer 1") == nothing
    for action in ["go to sidetable 1", "take pen 1 from sidetable 1", "go to drawer 1", "open drawer 1"]:
        obs, reward, done, info = env.step(action)
        assert (reward, done, info["invalid"]) == (0.0, False, False), (action, obs)
    assert env.expert_action() == "move pen 1 to drawer 1"
    assert env.step("move pen 1 to drawer 1") == ("You move the pen 1 to the drawer 1.", 1.0, True,
                                                  {"score": 1.0, "won": True, "invalid": False, "revisit": False})
    assert env.expert_action() is None and env.expert_plan() == []
    env.close()


def test_undo_replays_the_game_to_the_state_before_the_last_step():
    env = shipped("valid_seen", expert="planner")
    env.reset(PEN_GAME)
    env.step("go to sidetable 1")
    env.step("take pen 1 from sidetable 1")
    assert env.expert_action() == "go to drawer 2"
    env.undo()  # the pen is back on the sidetable
    assert env.expert_plan()[:1] == ["take pen 1 from sidetable 1"]
    assert env.step("take pen 1 from sidetable 1")[0] == "You pick up the pen 1 from the sidetable 1."
    env.undo()
    env.undo()
    assert env.step("take pen 1 from sidetable 1")[3]["invalid"]  # back in the middle of the room
    env.close()


def test_a_game_folder_of_the_release_needs_only_its_game_file(tmp_path):
    """alfworld's release ships game.tw-pddl alone (no traj_data.json, no initial_state.pddl): such a
    folder is found, and the engine plays it."""
    folder = tmp_path / "json_2.1.1" / PEN_GAME
    folder.mkdir(parents=True)
    shutil.copyfile(os.path.join(ALFWORLD_SHIPPED, "json_2.1.1", PEN_GAME, "game.tw-pddl"), folder / "game.tw-pddl")
    env = AlfWorldEnv("valid_seen", data_dir=tmp_path, expert="planner")
    assert env.task_ids() == [PEN_GAME]
    assert env.reset(PEN_GAME).endswith("Your task is to: put some pen on drawer.")
    assert env.expert_action() == "go to sidetable 1"
    env.close()


def test_a_game_is_translated_once_and_played_again_without_translating(tmp_path):
    """textworld translates a game's PDDL at load and again at reset (seconds on the benchmark's scenes);
    the translation and the parsed grammar are memoized, so a first reset translates once (a normal and
    a replanning task) and a replay (undo, the next agent's evaluation) translates nothing."""
    import fast_downward
    folder = tmp_path / "json_2.1.1" / PEN_GAME
    folder.mkdir(parents=True)
    with open(os.path.join(ALFWORLD_SHIPPED, "json_2.1.1", PEN_GAME, "game.tw-pddl")) as f:
        game = json.load(f)
    game["pddl_problem"] += "\n; a copy no other test has translated\n"  # a PDDL comment
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    translations = lambda: fast_downward.pddl2sas.cache_info().misses  # noqa: E731
    env = AlfWorldEnv("valid_seen", data_dir=tmp_path)
    env.reset(PEN_GAME)  # memoizes from its first reset on
    before = translations()
    first = [env.reset(PEN_GAME), env.step("go to sidetable 1")[0], env.step("take pen 1 from sidetable 1")[0]]
    env.undo()
    assert env.step("take pen 1 from sidetable 1")[0] == first[2] == "You pick up the pen 1 from the sidetable 1."
    assert [env.reset(PEN_GAME), env.step("go to sidetable 1")[0]] == first[:2]
    assert translations() == before
    game["pddl_problem"] += "; and another\n"
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    env.reset(PEN_GAME)
    assert translations() == before + 2  # at load; reset reuses them
    assert [env.reset(PEN_GAME), env.step("go to sidetable 1")[0]] == first[:2]
    assert translations() == before + 2
    env.close()


def test_the_planner_is_asked_again_only_after_a_step_off_its_plan_that_changed_the_game(monkeypatch):
    """From the start the plan is the game's walkthrough; it is kept while the agent follows it."""
    env = shipped("valid_seen", expert="planner")
    env.reset(PEN_GAME)
    calls = []
    replan = type(env._tw.unwrapped._pddl_state).replan
    monkeypatch.setattr(type(env._tw.unwrapped._pddl_state), "replan",
                        lambda self, *a: calls.append(1) or replan(self, *a))
    env.reset(PEN_GAME)
    plan = env.expert_plan()
    with open(os.path.join(ALFWORLD_SHIPPED, "json_2.1.1", PEN_GAME, "game.tw-pddl")) as f:
        assert plan == json.load(f)["walkthrough"] and calls == []
    env.step(plan[0])
    assert env.expert_plan() == plan[1:] and env.expert_action() == plan[1] and calls == []  # on the plan
    env.step("put pen 1 in drawer 1")  # rejected ("Nothing happens."): no fact changed, the plan still wins
    assert env.expert_plan() == plan[1:] and calls == []
    env.step("go to drawer 1")  # off the plan, somewhere else: planned again from here
    replanned = env.expert_plan()
    assert replanned[:2] == ["go to sidetable 1", "take pen 1 from sidetable 1"] and len(calls) == 1
    for action in replanned:
        env.step(action)
    assert env.expert_plan() == [] and len(calls) == 1
    env.close()


def play_expert(split, expert):
    """Plays the expert's actions on every game of a split: (task id, actions, last reward, info,
    expert action after the win, the expert's plan from the start) each."""
    env, results = shipped(split, expert=expert), []
    for tid in env.task_ids():
        env.reset(tid)
        plan, actions = env.expert_plan(), []
        for _ in range(env.max_steps):
            actions.append(env.expert_action())
            obs, reward, done, info = env.step(actions[-1])
            assert not info["invalid"], (tid, obs)
            if done:
                break
        results.append((tid, actions, reward, info, env.expert_action(), plan))
    env.close()
    return results


@pytest.mark.parametrize("expert", ["planner", "search"])
def test_the_expert_solves_every_valid_game_with_envs_in_parallel_threads(expert):
    # one env per thread, like run_episodes' slots: the engine is not thread-safe by itself
    with ThreadPoolExecutor(2) as pool:
        results = [r for rs in pool.map(play_expert, ["valid_seen", "valid_unseen"], [expert] * 2) for r in rs]
    assert len(results) == 12
    for tid, actions, reward, info, expert_after, plan in results:
        assert (reward, info, expert_after) == (1.0, {"score": 1.0, "won": True, "invalid": False, "revisit": False},
                                                None), tid
        assert plan == actions, tid  # the plan from the start is what the expert then does


def test_golden_trajectories_of_the_planner_succeed():
    env = shipped("train", expert="planner")
    trajs = [rollout.golden_trajectory(env, tid) for tid in env.task_ids()]
    env.close()
    assert len(trajs) == 18
    for traj in trajs:
        assert (traj["env"], traj["split"], traj["source"]) == ("alfworld", "train", "golden")
        assert (traj["success"], traj["reward"]) == (True, 1.0)
        actions = [m for m in traj["messages"] if m["role"] == "assistant"]
        assert 4 <= len(actions) == traj["steps"] <= 9 and traj["messages"][-1]["role"] == "assistant"
        annotated = [m for m in oracle.annotate_golden(traj)["messages"] if m["role"] == "assistant"]
        assert [m["action"] for m in annotated] == [m["content"].removeprefix("Action: ") for m in actions]
        assert all(m["content"] == f"Thought: {m['thought']}\nAction: {m['action']}" for m in annotated)
    turns = [m["content"] for m in oracle.annotate_golden(trajs[0])["messages"] if m["role"] == "assistant"]
    assert turns[:2] == ["Thought: I go to the bed 1 to take the book 1.\nAction: go to bed 1",
                         "Thought: I take the book 1; the task needs it.\nAction: take book 1 from bed 1"]


def test_an_eval_run_with_a_scripted_policy_fails_every_game():
    def always_look(histories, keys):
        return ["Thought: I look around.\nAction: look"] * len(histories)

    trajs = []
    for split in ("valid_seen", "valid_unseen"):
        make = lambda split=split: shipped(split, max_steps=3)
        trajs += rollout.run_episodes(always_look, make, make().task_ids(), parallel=2)
    assert len(trajs) == 12
    assert {(t["success"], t["reward"], t["steps"], t["end_reason"]) for t in trajs} == {(False, 0.0, 3, "max_steps")}
    summary = envs.summarize(trajs)
    for split in ("valid_seen", "valid_unseen"):
        assert summary[f"alfworld/{split}"]["metric"] == 0.0 and summary[f"alfworld/{split}"]["episodes"] == 6


def write_pen_game(data_dir, contents):
    """The shipped pen game's room (scene 2) with its things placed as `contents` says, under data_dir."""
    with open(alfworld_games.ALFRED_PDDL_PATH) as f:
        domain = f.read()
    with open(alfworld_games.ALFRED_TWL2_PATH) as f:
        grammar = f.read()
    folder, traj, problem = alfworld_games.game_files("valid_seen", "pick_and_place_simple", "Pen", "Drawer", 2,
                                                      contents)
    alfworld_games.write_game(folder, traj, problem, domain, grammar, out_dir=os.path.join(data_dir, "json_2.1.1"))
    return folder


def test_the_searching_expert_acts_the_same_until_it_sees_the_object(tmp_path):
    """Its steps before the pen first shows do not depend on where the pen is: the same room with the pen
    placed elsewhere gives the same first steps, up to the one that shows it."""
    placements = {"sidetable": {"SideTable 1": "Pen, CellPhone", "Desk 1": "Book"},
                  "shelf": {"Shelf 1": "Pen", "SideTable 1": "CellPhone", "Desk 1": "Book"},
                  "garbagecan": {"GarbageCan 1": "Pen", "SideTable 1": "CellPhone", "Desk 1": "Book"}}
    played = {}
    for name, contents in placements.items():
        task_id = write_pen_game(tmp_path / name, contents)
        env = AlfWorldEnv("valid_seen", data_dir=tmp_path / name)
        env.reset(task_id)
        actions, seen_at, done = [], None, False
        while not done:
            actions.append(env.expert_action())
            obs, _, done, info = env.step(actions[-1])
            assert not info["invalid"], (name, actions)
            seen_at = seen_at if seen_at is not None or "pen 1" not in obs else len(actions)
        env.close()
        played[name] = actions[:seen_at]
    assert played == {"sidetable": ["go to desk 1", "go to sidetable 1"],
                      "shelf": ["go to desk 1", "go to sidetable 1", "go to shelf 1"],
                      "garbagecan": ["go to desk 1", "go to sidetable 1", "go to shelf 1", "go to drawer 1",
                                     "open drawer 1", "go to drawer 2", "open drawer 2", "go to garbagecan 1"]}


def test_the_searching_experts_golden_trajectory_says_what_it_looks_for():
    env = shipped("valid_seen")
    traj = rollout.golden_trajectory(env, PEN_GAME)
    env.close()
    turns = [m for m in traj["messages"] if m["role"] == "assistant"]
    assert traj["success"] and all(m["content"] == f"Thought: {m['thought']}\nAction: {m['action']}" for m in turns)
    assert [(m["thought"], m["action"]) for m in turns] == [
        ("I need a pen: I check the desk 1 next. After it: sidetable 1, shelf 1, drawer 1 and 3 more.", "go to desk 1"),
        ("There is no pen on the desk 1. I need a pen: I check the sidetable 1 next. After it: shelf 1, drawer 1, "
         "drawer 2 and 2 more.", "go to sidetable 1"),
        ("I see the pen 1 on the sidetable 1. I take it.", "take pen 1 from sidetable 1"),
        ("I have the pen 1; it goes in the drawer 1. I go to the drawer 1.", "go to drawer 1"),
        ("The drawer 1 is closed. I open it.", "open drawer 1"),
        ("I put the pen 1 in the drawer 1.", "move pen 1 to drawer 1")]
    assert oracle.annotate_golden(traj) == traj  # every turn has its thought already


def test_the_oracle_judges_a_search_by_the_searching_expert():
    """A receptacle not yet looked into is a right step, even out of the expert's order; going back to
    one already looked into is wrong, corrected with the expert's next place and its reason."""
    from teacher import teacher_prompt
    env = shipped("valid_seen")
    episode = rollout.Episode(env, PEN_GAME)
    episode.begin()
    verdicts = []
    for action in ["go to shelf 1", "go to desk 1", "go to shelf 1"]:
        step = rollout.agent_step(episode, f"Thought: I look.\nAction: {action}", judged=True)
        verdicts.append((step.facts.repeated, step.facts.plan_before, step.facts.plan_after,
                         oracle.oracle_verdict(teacher_prompt(step)[-1]["content"])))
    env.close()
    assert episode.messages[-2]["facts"] == {  # the judged turn keeps what the judge was shown
        "rejected": False, "repeated": True, "irreversible": False, "plan_before": 5, "plan_after": 5,
        "expert_before": "go to sidetable 1", "expert_after": "go to sidetable 1"}
    assert verdicts[0] == (False, 6, 6, {"verdict": "correct"})  # new, out of order: the plan is no longer
    assert verdicts[1] == (False, 6, 5, {"verdict": "correct"})  # the expert's own next place
    assert verdicts[2] == (True, 5, 5, {
        "verdict": "wrong", "reflection": "I had already looked at the shelf 1: going back there shows me nothing new.",
        "thought": "There is no pen on the shelf 1. I need a pen: I check the sidetable 1 next. After it: drawer 1, "
                   "drawer 2, garbagecan 1 and 1 more.",
        "action": "go to sidetable 1"})


def test_judge_counts_an_evaluations_steps_by_the_oracle(tmp_path, monkeypatch):
    """step.py judge: an evaluation's episode replayed and judged as stage 2 would judge it."""
    import step
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)  # the shipped games
    replies = ["Thought: I look.\nAction: go to shelf 1",  # a new place out of the expert's order: right
               "Thought: I look.\nAction: go to desk 1",  # the expert's own: right
               "Thought: I look.\nAction: go to shelf 1",  # back where it looked: wrong (repeated)
               "Reflection: I was there.\nThought: I look.\nAction: go to sidetable 1",  # right, the expert's own
               "Thought: I look.\nAction: go to bathtub 9",  # rejected: wrong
               "Thought: I take it.\nAction: take pen 1 from sidetable 1"]  # the last step: not judged

    def scripted(histories, keys):
        return [replies[sum(m["role"] == "assistant" for m in h)] for h in histories]

    trajs = rollout.run_episodes(scripted, lambda: shipped("valid_seen", max_steps=6), [PEN_GAME], parallel=1)
    episodes = tmp_path / "episodes.jsonl"
    for traj in trajs:
        data.append_jsonl(episodes, traj)
    step.main(["judge", str(episodes), "--out", str(tmp_path / "judged.json")])
    report = json.loads((tmp_path / "judged.json").read_text())
    assert report["errors"] == {"right": 3, "repeated": 1, "rejected": 1}
    counts = {group: (report[group]["steps"], report[group]["right"], report[group]["experts_own"])
              for group in ("all steps", "steps with a Reflection: line", "steps right after a wrong step")}
    assert counts == {"all steps": (5, 3, 2), "steps with a Reflection: line": (1, 1, 1),
                      "steps right after a wrong step": (1, 1, 1)}
    assert report["episodes"] == 1 and report["all steps"]["right_share"] == 0.6
