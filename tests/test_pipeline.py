"""The commands end to end on the real ScienceWorld engine: golden, synthesize (the oracle teacher
over real HTTP on loopback), eval, and the whole pipeline at a tiny size."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import envs
import step
from data import load_trajectories, marked_for_training, read_jsonl
from oracle import serve_oracle_teacher

REPO = Path(__file__).resolve().parents[1]
TASK_TYPES = "lifespan-longest-lived,lifespan-shortest-lived"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """Golden trajectories of 4 train tasks and a random scratch model with a tokenizer trained on them."""
    root = tmp_path_factory.mktemp("agent")
    step.golden(step.command_args("golden", split="train", tasks=4, task_types=TASK_TYPES, out=root / "golden.jsonl"))
    trajectories = load_trajectories(root / "golden.jsonl")
    return root, step.scratch_model(root, trajectories, seed=0), trajectories


@pytest.fixture(scope="module")
def teacher_url():
    server = serve_oracle_teacher("127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_golden_trajectories_are_engine_verified(agent):
    _, _, trajectories = agent
    assert len(trajectories) == 4 and {t["task"].split("/")[0] for t in trajectories} == set(TASK_TYPES.split(","))
    assert all(t["success"] and t["reward"] == 1.0 and t["source"] == "golden" for t in trajectories)
    assert all(m["content"].startswith("Action: ") for t in trajectories for m in t["messages"] if m["role"] == "assistant")


def synthesize_args(model, out, url, **overrides):
    options = dict(model=model, split="train", tasks=2, task_types=TASK_TYPES, teacher_url=url, out=out,
                   max_steps=30, max_corrections=20, parallel=2, max_new_tokens=12)
    return step.command_args("synthesize", **{**options, **overrides})


def test_synthesis_with_the_oracle_teacher_over_http(agent, teacher_url, tmp_path):
    _, model, _ = agent
    summary = step.synthesize(synthesize_args(model, tmp_path / "reflected.jsonl", teacher_url))
    episodes = read_jsonl(tmp_path / "reflected.jsonl")
    assert summary["episodes"] == len(episodes) == 2 and summary["teacher_calls"] > 0
    env = envs.make_env("sciworld", "train", tasks=TASK_TYPES.split(","))
    for episode in episodes:
        messages = episode["messages"][2:]  # after the system prompt and the task
        errors = [i for i, m in enumerate(messages) if m.get("error")]
        assert episode["errors"] == len(errors) > 0  # a random model errs, the oracle catches it
        for i in errors:
            error, correction = messages[i], messages[i + 2]
            assert error["loss"] is False and correction["loss"] is True
            assert correction["content"] == f"Reflection: {correction['reflection']}\nThought: {correction['thought']}\n" \
                                            f"Action: {correction['action']}"
            assert "the next step is" in correction["reflection"]
        # What was executed is what the trajectory says: replaying its actions gives its observations.
        env.reset(episode["task"])
        for reply, observation in zip(messages[0::2], messages[1::2]):
            obs = env.step(envs.parse_action(reply["content"]) or "")[0] if envs.parse_action(reply["content"]) else None
            if obs is not None:
                assert envs.unordered(obs) == envs.unordered(observation["content"])
        assert episode["success"] and episode["reward"] == 1.0  # every step corrected to the expert's
    env.close()
    assert summary["kept_for_training"] == 2 and all(e["train"] is True for e in episodes)
    assert len(load_trajectories(tmp_path / "reflected.jsonl", keep=marked_for_training)) == 2


def test_synthesis_resumes_after_a_kill(agent, teacher_url, tmp_path):
    _, model, _ = agent
    out = tmp_path / "reflected.jsonl"
    command = [sys.executable, str(REPO / "step.py"), "synthesize", "--model", str(model), "--split", "train",
               "--tasks", "4", "--task-types", TASK_TYPES, "--teacher-url", teacher_url, "--out", str(out),
               "--max-steps", "6", "--parallel", "1", "--max-new-tokens", "8"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 1):
        time.sleep(0.2)
    process.kill()
    process.wait()
    first = [t["task"] for t in read_jsonl(out)]
    assert 1 <= len(first) < 4, "the run should be killed part-way"
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tasks = [t["task"] for t in read_jsonl(out)]
    assert tasks[:len(first)] == first and len(tasks) == len(set(tasks)) == 4
    # Six steps are too few to succeed: every episode is written, none is marked for training.
    assert [t["train"] for t in read_jsonl(out)] == [False] * 4
    assert load_trajectories(out, keep=marked_for_training) == []


def test_eval_writes_episodes_and_a_summary_and_skips_them_on_rerun(agent, tmp_path):
    _, model, _ = agent
    args = step.command_args("eval", model=model, split="test", tasks=2, task_types=TASK_TYPES, out=tmp_path,
                             max_new_tokens=8, max_invalid=3)
    summary = step.evaluate(args)
    episodes = read_jsonl(tmp_path / "episodes.jsonl")
    assert len(episodes) == 2 and {e["split"] for e in episodes} == {"test"}
    assert all(e["source"] == "agent" and e["end_reason"] in ("done", "max_steps", "invalid_actions") for e in episodes)
    assert summary["sciworld/test"]["episodes"] == 2
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    before = (tmp_path / "episodes.jsonl").read_text()
    assert step.evaluate(args) == summary and (tmp_path / "episodes.jsonl").read_text() == before


def test_pipeline_runs_every_stage_at_a_tiny_size(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, str(REPO / "step.py"), "pipeline", "--quick", "--out", str(run), "--task-types",
               TASK_TYPES, "--train-tasks", "4", "--test-tasks", "2", "--epochs", "1", "--parallel", "2",
               "--threads", "1", "--max-steps", "30", "--max-corrections", "30"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run(command, cwd=REPO, check=True, env=env, capture_output=True, timeout=600)
    for name in ["golden.jsonl", "d1.jsonl", "u2_golden.jsonl", "init/config.json", "base/model.safetensors",
                 "reflected.jsonl", "results.json", "results.md"]:
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert [r["variant"] for r in results["rows"]] == ["base", "golden-only", "step", "step-nomask"]
    assert all(r["episodes"] == 2 and 0 <= r["score"] <= 100 for r in results["rows"])
    rows = {r["variant"]: r for r in results["rows"]}
    # Without masking the error steps are trained too: more trainable tokens on the same data.
    assert rows["step-nomask"]["trainable_tokens"] > rows["step"]["trainable_tokens"]
    assert len(read_jsonl(run / "d1.jsonl")) == len(read_jsonl(run / "u2_golden.jsonl")) == 2
    # A rerun finds every stage finished: no model or trajectory file is touched, and the summaries
    # recomputed from the recorded episodes come out the same.
    before = {p: (p.stat().st_mtime, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    subprocess.run(command, cwd=REPO, check=True, env=env, capture_output=True, timeout=600)
    assert all(p.read_bytes() == content for p, (_, content) in before.items())
    assert all(p.stat().st_mtime == mtime for p, (mtime, _) in before.items()
               if p.suffix in (".jsonl", ".safetensors", ".model"))


def test_alfworld_golden_and_eval_commands(tmp_path):
    """`golden` and `eval` work unchanged on ALFWorld's real engine (the shipped games)."""
    step.golden(step.command_args("golden", env="alfworld", split="train", tasks=6, out=tmp_path / "golden.jsonl"))
    golden = load_trajectories(tmp_path / "golden.jsonl")
    assert len(golden) == 6 and all(t["success"] and t["env"] == "alfworld" for t in golden)
    assert len({t["task"].split("/")[1].split("-")[0] for t in golden}) == 6  # round-robin: all six task types
    model = step.scratch_model(tmp_path, golden, seed=0)
    for split in ("valid_seen", "valid_unseen"):
        summary = step.evaluate(step.command_args("eval", env="alfworld", model=model, split=split, tasks=2,
                                                  out=tmp_path / split, max_new_tokens=8, max_steps=4))
        assert summary[f"alfworld/{split}"]["episodes"] == 2
        assert summary[f"alfworld/{split}"]["metric"] == summary[f"alfworld/{split}"]["success_rate"] == 0.0


def test_pipeline_runs_unchanged_on_alfworld(tmp_path):
    """The same pipeline on ALFWorld's real engine: planner golden data, evaluation on seen and unseen."""
    run = tmp_path / "run"
    command = [sys.executable, str(REPO / "step.py"), "pipeline", "--quick", "--env", "alfworld", "--out", str(run),
               "--train-tasks", "6", "--test-tasks", "2", "--epochs", "1", "--parallel", "2", "--threads", "1",
               "--variants", "step", "--max-corrections", "20"]
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True,
                   timeout=600)
    results = json.loads((run / "results.json").read_text())
    assert [(r["variant"], r["split"]) for r in results["rows"]] == [
        ("base", "valid_seen"), ("base", "valid_unseen"), ("step", "valid_seen"), ("step", "valid_unseen")]
    assert all(r["episodes"] == 2 for r in results["rows"])
    reflected = read_jsonl(run / "reflected.jsonl")
    assert len(reflected) == 3 and all(t["env"] == "alfworld" and t["source"] == "reflected" for t in reflected)
