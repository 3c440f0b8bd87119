"""The statistics of the results: bootstrap intervals over seeds and tasks, the paired sign-flip test."""
import json

import numpy as np
import pytest

import report


def episodes(rewards, tasks=None):
    tasks = tasks or [f"find-plant/{i}" for i in range(len(rewards))]
    return [{"task": t, "reward": r, "success": r == 1.0} for t, r in zip(tasks, rewards)]


def test_sign_flip_p_is_exact_for_few_tasks():
    rng = np.random.default_rng(0)
    # Four equal positive differences: only "all +" and "all -" are as extreme as observed: 2 of 16.
    assert report.sign_flip_p([1, 1, 1, 1], rng) == 2 / 16
    # [3, 1]: the 4 sign patterns give |means| 2, 1, 1, 2: half are as extreme.
    assert report.sign_flip_p([3, 1], rng) == 0.5
    assert report.sign_flip_p([0, 0, 0], rng) == 1.0
    assert report.sign_flip_p([5, -5, 5, -5], rng) == 1.0


def test_sign_flip_p_samples_for_many_tasks():
    rng = np.random.default_rng(0)
    assert report.sign_flip_p([1.0] * 30, rng) == pytest.approx(1 / (report.PERMUTATIONS + 1))
    noise = np.random.default_rng(1).normal(size=40)
    assert 0.05 < report.sign_flip_p(noise - noise.mean(), rng) <= 1.0  # no effect: a large p


def test_bootstrap_over_tasks_matches_the_normal_interval():
    grid = np.array([[0.0, 100.0] * 50])  # one seed, 100 tasks: mean 50, standard error 5
    low, high = report.bootstrap_ci(grid, np.random.default_rng(0))
    assert low == pytest.approx(50 - 1.96 * 5, abs=1.5) and high == pytest.approx(50 + 1.96 * 5, abs=1.5)
    assert report.bootstrap_ci(np.full((3, 7), 42.0), np.random.default_rng(0)) == [42.0, 42.0]


def test_bootstrap_resamples_seeds_too():
    """Two seeds 20 points apart, no spread over tasks: tasks alone would give a zero-width interval."""
    grid = np.array([[0.0] * 30, [20.0] * 30])
    low, high = report.bootstrap_ci(grid, np.random.default_rng(0))
    assert low == 0.0 and high == 20.0


def test_episode_grid_is_seeds_by_tasks_and_refuses_different_tasks():
    by_seed = {0: episodes([1.0, 0.5, 0.0]), 1: episodes([0.0, 0.25, 1.0])}
    grid, tasks = report.episode_grid(by_seed, "sciworld", "step on test")
    assert tasks == ["find-plant/0", "find-plant/1", "find-plant/2"]
    assert grid["metric"].tolist() == [[100.0, 50.0, 0.0], [0.0, 25.0, 100.0]]
    assert grid["success"].tolist() == [[100.0, 0.0, 0.0], [0.0, 0.0, 100.0]]
    other = {0: episodes([1.0, 0.5, 0.0]), 1: episodes([1.0, 0.5, 0.0], ["find-plant/0", "find-plant/1", "x/9"])}
    with pytest.raises(ValueError, match="step on test, seed 1: the episodes are not those of the other seeds"):
        report.episode_grid(other, "sciworld", "step on test")


def test_alfworld_reports_success_as_its_metric():
    grid, _ = report.episode_grid({0: [{"task": "a", "reward": 0.3, "success": False},
                                       {"task": "b", "reward": 1.0, "success": True}]}, "alfworld", "x")
    assert grid["metric"].tolist() == [[0.0, 100.0]]


def test_comparison_pairs():
    assert report.comparison_pairs(["base", "golden-only", "step", "step-nomask"]) == [
        ("step", "golden-only"), ("step", "base"), ("step", "step-nomask"), ("base", "golden-only"),
        ("step-nomask", "golden-only")]
    assert report.comparison_pairs(["base", "step"]) == [("step", "base")]
    assert report.comparison_pairs(["base", "golden-only", "step", "step-noreflection", "step-reflection-in-thought"]) == [
        ("step", "golden-only"), ("step", "base"), ("step", "step-noreflection"), ("step", "step-reflection-in-thought"),
        ("base", "golden-only"), ("step-noreflection", "golden-only"), ("step-reflection-in-thought", "golden-only")]


def test_behaviour_counts_reflection_lines_repeated_steps_and_end_reasons():
    def episode(turns, end_reason):
        messages = [{"role": "user", "content": "Reflection: not the agent's"}]
        for reply, answer in turns:
            messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": answer}]
        return {"end_reason": end_reason, "messages": messages}
    look, go = "Thought: a\nAction: look around", "Reflection: wrong room.\nThought: b\nAction: go to hall"
    episodes = [episode([(look, "a kitchen"), (go, "a hall"), (look, "a hall")], "done"),  # a new answer: no repeat
                episode([("Reflection: c\nThought: d\nAction: y", "Nothing happens.")] * 3, "invalid_actions"),
                episode([("Thought: e\nAction: z", "ok"), ("Thought: no action", "ok"), ("Thought: e\nAction: z", "ok")],
                        "max_steps"),
                episode([], "env_error: the JVM died")]
    # steps with an action: 3 + 3 + 2 = 8; repeats: y twice (reflecting), z once; reflecting steps: go, y x 3
    assert report.behaviour(episodes) == {"reflecting_episodes": 50.0, "reflections_per_episode": 1.0,
                                          "repeated_steps": 37.5, "repeated_after_reflection": 50.0,
                                          "first_take_seen": None,
                                          "end_reasons": {"done": 25.0, "max_steps": 25.0, "invalid_actions": 25.0,
                                                          "other": 25.0}}
    no_step = report.behaviour([episode([("Thought: no action", "Invalid format")], "max_steps")])
    assert no_step["repeated_steps"] is None and no_step["repeated_after_reflection"] is None


def test_first_take_seen_tells_a_look_before_taking_from_a_guess():
    def messages(*turns):
        out = [{"role": "user", "content": "You see a desk 1 and a drawer 1.\n\nYour task is to: put a mug in drawer 1."}]
        for action, answer in turns:
            out += [{"role": "assistant", "content": f"Thought: t\nAction: {action}"}, {"role": "user", "content": answer}]
        return out
    arrive = ("go to desk 1", "You arrive at desk 1. On the desk 1, you see a mug 2, and a pen 1.")
    assert report.first_take_seen(messages(arrive, ("take mug 2 from desk 1", "You pick up the mug 2."))) is True
    # "mug 1" is not "mug 2", nor a part of "mug 12"; only the first take counts
    assert report.first_take_seen(messages(arrive, ("take mug 1 from desk 1", "Nothing happens."),
                                           ("take mug 2 from desk 1", "You pick up the mug 2."))) is False
    assert report.first_take_seen(messages(("go to desk 1", "On the desk 1, you see a mug 12."),
                                           ("take mug 1 from desk 1", "Nothing happens."))) is False
    # the room's receptacles, listed before the first step, are not objects seen
    assert report.first_take_seen(messages(arrive, ("take drawer 1 from desk 1", "Nothing happens."))) is False
    assert report.first_take_seen(messages(arrive, ("take mug 2 from desk 1", "You pick up the mug 2."))[:2]) is None
    episodes = [{"end_reason": "done", "messages": messages(arrive, ("take mug 2 from desk 1", "ok"))},
                {"end_reason": "max_steps", "messages": messages(arrive, ("take pen 3 from desk 1", "Nothing happens."))},
                {"end_reason": "max_steps", "messages": messages(arrive)}]  # no take: not counted
    assert report.behaviour(episodes)["first_take_seen"] == 50.0


def test_variance_components_recover_a_known_two_way_grid():
    """A seed effect of +-10, a task effect of +-20 and no rest: the analysis finds each."""
    seed_effect = np.array([-10.0, 10.0])[:, None]
    task_effect = np.array([-20.0, 20.0] * 20)[None, :]
    spread = report.variance_components(50 + seed_effect + task_effect)
    assert spread["rest"] == pytest.approx(0, abs=1e-6)
    assert spread["seed"] == pytest.approx(np.std([-10, 10], ddof=1), rel=1e-6)
    assert spread["task"] == pytest.approx(np.std([-20, 20] * 20, ddof=1), rel=1e-6)
    one_seed = report.variance_components(np.array([[0.0, 100.0] * 5]))
    assert one_seed["seed"] is None and one_seed["task"] == pytest.approx(np.std([0, 100] * 5, ddof=1))


def test_stage_2s_second_file_is_counted_beside_the_first(tmp_path):
    """With the variant step-undo, stage 2 also writes reflected-undo.jsonl: its kept trajectories and
    the steps it took back are reported beside the first stage 2's."""
    def write(name, records):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))

    def episode(task, success=True, **counts):
        return {"env": "sciworld", "task": task, "success": success, "train": success, **counts}
    plant, lifespan = "find-plant/3", "lifespan-shortest-lived/4"
    write("d1.jsonl", [episode("find-plant/1"), episode("lifespan-shortest-lived/2")])
    write("u2_golden.jsonl", [episode(plant), episode(lifespan)])
    write("reflected.jsonl", [episode(plant, errors=1, corrections=1), episode(lifespan, False, errors=1)])
    runs = {0: tmp_path}
    first = {"find-plant": {"d1": 1.0, "u2_golden": 1.0, "reflected_episodes": 1.0, "reflected_kept": 1.0},
             "lifespan-shortest-lived": {"d1": 1.0, "u2_golden": 1.0, "reflected_episodes": 1.0, "reflected_kept": 0.0}}
    assert report.data_balance(runs) == first
    write("reflected-undo.jsonl", [episode(plant, errors=1, corrections=1),
                                   episode(lifespan, errors=1, corrections=1, taken_back=1)])
    assert report.data_balance(runs) == {family: {**row, "undo_kept": 1.0} for family, row in first.items()}
    assert report.stage2_summary(runs) == {"0": {
        "episodes": 2, "kept": 1, "errors": 2, "corrections": 1, "taken_back": 0, "unjudged": 0,
        "undo": {"episodes": 2, "kept": 2, "errors": 2, "corrections": 2, "taken_back": 1, "unjudged": 0}}}
