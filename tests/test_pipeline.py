"""The commands end to end on the real ScienceWorld engine: golden, synthesize (the oracle teacher
over real HTTP on loopback), eval, and the whole pipeline at a tiny size."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import envs
import pipeline
import step
from data import load_trajectories, marked_for_training, parse_action, read_jsonl
from oracle import serve_oracle_teacher
from rollout import AgentConfig, load_agent
from teacher import TeacherConfig

REPO = Path(__file__).resolve().parents[1]
TASK_TYPES = "lifespan-longest-lived,lifespan-shortest-lived"
# The oracle's reflections on what a random model does (text without an action, unknown commands).
REFLECTIONS = {"My reply had no action line, so nothing happened.", "The simulator does not know that command.",
               "The simulator did not know what I meant: nothing here goes by that name.",
               "I did the same thing before and got the same answer; doing it again gets me nowhere."}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """Golden trajectories of 4 train tasks and a random scratch model with a tokenizer trained on them."""
    root = tmp_path_factory.mktemp("agent")
    pipeline.golden(AgentConfig(split="train", tasks=4, task_types=TASK_TYPES), root / "golden.jsonl")
    trajectories = load_trajectories(root / "golden.jsonl")
    return root, pipeline.scratch_model(root, trajectories, seed=0), trajectories


@pytest.fixture(scope="module")
def teacher_url():
    server = serve_oracle_teacher("127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_golden_trajectories_are_engine_verified(agent):
    _, _, trajectories = agent
    assert len(trajectories) == 4 and {t["task"].split("/")[0] for t in trajectories} == set(TASK_TYPES.split(","))
    assert all(t["success"] and t["reward"] == 1.0 and t["source"] == "golden" for t in trajectories)
    turns = [m for t in trajectories for m in t["messages"] if m["role"] == "assistant"]
    assert all(m["content"] == f"Thought: {m['thought']}\nAction: {m['action']}" for m in turns)  # the oracle's thoughts
    lifespan = next(t for t in trajectories if t["task"].startswith("lifespan-longest-lived/"))
    focus = next(m for m in lifespan["messages"] if m.get("action", "").startswith("focus on"))
    assert focus["thought"] == f"The {focus['action'][9:]} is the animal with the longest life span, so I focus on it."


def synthesize(model, out, url):
    agent = AgentConfig(model=model, split="train", tasks=2, task_types=TASK_TYPES, max_steps=30, parallel=2,
                        max_new_tokens=12)
    return pipeline.synthesize(agent, TeacherConfig(url=url), out, max_corrections=20)


@pytest.mark.slow
def test_synthesis_with_the_oracle_teacher_over_http(agent, teacher_url, tmp_path):
    _, model, _ = agent
    summary = synthesize(model, tmp_path / "reflected.jsonl", teacher_url)
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
            # what went wrong, by kind, not the failed step again; the correction is in the action line
            assert correction["reflection"] in REFLECTIONS, correction["reflection"]
            taken = messages[i + 3:i + 4]  # what the engine answered (a last observation is not kept)
            assert not any(m["content"].startswith(envs.SCIWORLD_INVALID) for m in taken)
        # What was executed is what the trajectory says: replaying its actions gives its observations.
        env.reset(episode["task"])
        for reply, observation in zip(messages[0::2], messages[1::2]):
            if parse_action(reply["content"]) is not None:
                assert env.step(parse_action(reply["content"]))[0] == observation["content"]
        assert episode["success"] and episode["reward"] == 1.0  # every step corrected to the expert's
    env.close()
    assert summary["kept_for_training"] == 2 and all(e["train"] is True for e in episodes)
    assert len(load_trajectories(tmp_path / "reflected.jsonl", keep=marked_for_training)) == 2


@pytest.mark.slow
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


@pytest.mark.slow
def test_eval_writes_episodes_and_a_summary_and_skips_them_on_rerun(agent, tmp_path):
    _, model, _ = agent
    agent = AgentConfig(model=model, split="test", tasks=2, task_types=TASK_TYPES, max_new_tokens=8, max_invalid=3)
    summary = pipeline.evaluate(agent, tmp_path)
    episodes = read_jsonl(tmp_path / "episodes.jsonl")
    assert len(episodes) == 2 and {e["split"] for e in episodes} == {"test"}
    assert all(e["source"] == "agent" and e["end_reason"] in ("done", "max_steps", "invalid_actions") for e in episodes)
    assert summary["sciworld/test"]["episodes"] == 2
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    before = (tmp_path / "episodes.jsonl").read_text()
    assert pipeline.evaluate(agent, tmp_path) == summary and (tmp_path / "episodes.jsonl").read_text() == before


@pytest.mark.slow
def test_eval_plays_the_agent_in_the_dtype_asked_for(agent, tmp_path):
    """--dtype bf16 loads the agent's weights in bf16 (a pretrained student on a CPU); the default on a
    CPU is fp32, the scratch model's training precision."""
    _, model, _ = agent
    assert {p.dtype for p in load_agent(model, "cpu")[0].parameters()} == {torch.float32}
    assert {p.dtype for p in load_agent(model, "cpu", dtype="bf16")[0].parameters()} == {torch.bfloat16}
    summary = pipeline.evaluate(AgentConfig(model=model, split="test", tasks=1, task_types=TASK_TYPES,
                                            max_new_tokens=8, max_invalid=2, dtype="bf16"), tmp_path)
    assert summary["sciworld/test"]["episodes"] == len(read_jsonl(tmp_path / "episodes.jsonl")) == 1


# Fields that measure time: the only ones two identical runs may differ in.
WALL_CLOCK = {"elapsed", "wall_time_s", "teacher_latency_s", "teacher_latency_s_per_call"}


def without_wall_clock(obj):
    if isinstance(obj, dict):
        return {k: without_wall_clock(v) for k, v in obj.items() if k not in WALL_CLOCK}
    return [without_wall_clock(v) for v in obj] if isinstance(obj, list) else obj


def run_contents(run):
    """{relative path: content}, JSON files parsed and their wall-clock fields left out."""
    contents = {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        if path.suffix == ".jsonl":
            contents[path.relative_to(run)] = [without_wall_clock(r) for r in read_jsonl(path)]
        elif path.suffix == ".json":
            contents[path.relative_to(run)] = without_wall_clock(json.loads(path.read_text()))
        else:
            contents[path.relative_to(run)] = path.read_bytes()
    return contents


def tiny_pipeline(run, *extra):
    return [sys.executable, str(REPO / "step.py"), "pipeline", "--quick", "--out", str(run), "--task-types",
            "find-non-living-thing,lifespan-longest-lived", "--train-tasks", "4", "--test-tasks", "2", "--epochs", "1",
            "--parallel", "2", "--threads", "1", "--max-steps", "20", "--max-corrections", "20", *extra]


@pytest.mark.slow
def test_the_pipeline_runs_every_stage_per_seed_and_reruns_identically(tmp_path):
    """Two seeds, twice into two folders at once: the same files, byte for byte but for wall-clock
    fields (trajectories, models, episodes, results, figure); a third run resumes and finds it all done."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    runs = [tmp_path / "a", tmp_path / "b"]
    processes = [subprocess.Popen(tiny_pipeline(run, "--seeds", "2"), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for run in runs]
    for p in processes:
        assert p.wait(timeout=900) == 0, p.stderr.read()[-3000:]
    first = runs[0]
    for name in ["golden.jsonl", "seed-0/d1.jsonl", "seed-1/u2_golden.jsonl", "seed-0/init/config.json",
                 "seed-1/base/model.safetensors", "seed-0/reflected.jsonl", "seed-1/eval/step/dev/episodes.jsonl",
                 "results.json", "results.md", "results.png", "site/index.html", "site/seed-1/reflected/0.html"]:
        assert (first / name).exists(), name
    assert (first / "seed-0/d1.jsonl").read_text() != (first / "seed-1/d1.jsonl").read_text()  # the split is seeded
    assert run_contents(runs[0]) == run_contents(runs[1])

    results = json.loads((first / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["splits"] == ["dev", "test"]
    assert [(r["variant"], r["split"]) for r in results["rows"]] == [
        (v, s) for v in ["base", "golden-only", "step", "step-nomask"] for s in ["dev", "test"]]
    for r in results["rows"]:
        assert r["episodes"] == 4 and r["seeds"] == 2 and r["tasks"] == 2
        assert r["score_ci95"][0] <= r["score"] <= r["score_ci95"][1] and 0 <= r["score"] <= 100
        assert r["success_ci95"][0] <= r["success_rate"] <= r["success_ci95"][1]
    assert {(c["a"], c["b"]) for c in results["comparisons"]} == {
        ("step", "golden-only"), ("step", "base"), ("step", "step-nomask"), ("base", "golden-only"),
        ("step-nomask", "golden-only")}
    rows = {(r["variant"], r["split"]): r for r in results["rows"]}
    for c in results["comparisons"]:
        assert c["diff"] == pytest.approx(rows[c["a"], c["split"]]["score"] - rows[c["b"], c["split"]]["score"], abs=0.02)
        assert 0 < c["p"] <= 1
    # Without masking the error steps are trained too: more trainable tokens on the same data.
    assert rows["step-nomask", "test"]["trainable_tokens"] > rows["step", "test"]["trainable_tokens"]

    # `step.py report`: the seeds' records alone (no model) give the same results, also from two folders
    # of one seed each (seeds run on two machines); a seed in two folders, two settings, a seed
    # without its folder, or a file that is not a pipeline's results are refused.
    records = tmp_path / "records"
    step.main(["report", str(first), "--out", str(records)])
    assert json.loads((records / "results.json").read_text()) == results
    assert not list(records.rglob("*.safetensors")) and (records / "seed-1/eval/step/dev/episodes.jsonl").exists()
    for seed in (0, 1):
        shutil.copytree(records / f"seed-{seed}", tmp_path / f"only-{seed}" / f"seed-{seed}")
        (tmp_path / f"only-{seed}" / "results.json").write_text(json.dumps({**results, "seeds": [seed]}))
    step.main(["report", str(tmp_path / "only-1"), str(tmp_path / "only-0"), "--out", str(tmp_path / "merged")])
    assert json.loads((tmp_path / "merged" / "results.json").read_text()) == results
    with pytest.raises(SystemExit, match="seed 0 is in .* and in"):
        step.main(["report", str(records), str(tmp_path / "only-0"), "--out", str(tmp_path / "refused")])
    (tmp_path / "only-1" / "results.json").write_text(json.dumps({**results, "seeds": [1], "model": "other"}))
    with pytest.raises(SystemExit, match="another setting .*model: 'other' against 'scratch'"):
        step.main(["report", str(tmp_path / "only-0"), str(tmp_path / "only-1"), "--out", str(tmp_path / "refused")])
    (tmp_path / "only-1" / "results.json").write_text(json.dumps({**results, "seeds": [5]}))
    with pytest.raises(SystemExit, match="only-1/seed-5: no such folder, though .*only-1/results.json names seed 5"):
        step.main(["report", str(tmp_path / "only-0"), str(tmp_path / "only-1"), "--out", str(tmp_path / "refused")])
    (tmp_path / "only-1" / "results.json").write_text(json.dumps({"seeds": [1]}))
    with pytest.raises(SystemExit, match="only-1/results.json: not a pipeline's results"):
        step.main(["report", str(tmp_path / "only-0"), str(tmp_path / "only-1"), "--out", str(tmp_path / "refused")])

    # A rerun finds every stage finished: no model or trajectory file is touched.
    before = {p: (p.stat().st_mtime, p.read_bytes()) for p in first.rglob("*") if p.is_file()}
    subprocess.run(tiny_pipeline(first, "--seeds", "2"), cwd=REPO, check=True, env=env, capture_output=True,
                   timeout=600)
    assert all(p.read_bytes() == content for p, (_, content) in before.items())
    assert all(p.stat().st_mtime == mtime for p, (mtime, _) in before.items()
               if p.suffix in (".jsonl", ".safetensors", ".model"))


@pytest.mark.slow
def test_alfworld_golden_and_eval_commands(tmp_path):
    """`golden` and `eval` work unchanged on ALFWorld's real engine (the shipped games)."""
    pipeline.golden(AgentConfig(env="alfworld", split="train", tasks=6), tmp_path / "golden.jsonl")
    golden = load_trajectories(tmp_path / "golden.jsonl")
    assert len(golden) == 6 and all(t["success"] and t["env"] == "alfworld" for t in golden)
    assert len({t["task"].split("/")[1].split("-")[0] for t in golden}) == 6  # round-robin: all six task types
    model = pipeline.scratch_model(tmp_path, golden, seed=0)
    for split in ("valid_seen", "valid_unseen"):
        summary = pipeline.evaluate(AgentConfig(env="alfworld", model=model, split=split, tasks=2,
                                                max_new_tokens=8, max_steps=4), tmp_path / split)
        assert summary[f"alfworld/{split}"]["episodes"] == 2
        assert summary[f"alfworld/{split}"]["metric"] == summary[f"alfworld/{split}"]["success_rate"] == 0.0


@pytest.mark.slow
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
    reflected = read_jsonl(run / "seed-0" / "reflected.jsonl")
    assert len(reflected) == 3 and all(t["env"] == "alfworld" and t["source"] == "reflected" for t in reflected)


def test_the_training_recipe_follows_model_and_device_unless_named():
    def settings(*argv, stage_name="stage3"):
        cfg = step.config(pipeline.PipelineConfig, step.build_parser().parse_args(["pipeline", *argv]))
        return pipeline.training_settings(cfg, pipeline.PRESETS["quick"], stage_name, seed=0)

    assert settings()["lr"] == 3e-3 and settings()["epochs"] == 6  # scratch: the preset's epochs
    # bf16 autocast on a CPU only where bf16 is native; where it is emulated (AVX2) it trains 29x slower
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert settings("--model", "m", "--device", "cpu")["dtype"] == ("bf16" if native else "fp32")
    assert pipeline.agent_dtype(pipeline.PipelineConfig(model="m", device="cpu")) == ("bf16" if native else None)
    assert settings("--model", "m", "--device", "cuda")["dtype"] is None and pipeline.native_bf16("cuda")
    gpu = settings("--model", "m", "--device", "cuda")
    assert (gpu["lr"], gpu["epochs"], gpu["grad_accum"], gpu["grad_ckpt"]) == (2e-5, 3, 16, True)  # ETO's, for a 7B
    small_on_gpu = settings("--model", "m", "--device", "cuda", "--recipe", "pretrained-cpu")
    assert (small_on_gpu["lr"], small_on_gpu["epochs"], small_on_gpu["grad_accum"], small_on_gpu["device"]) == (
        5e-5, 1, 2, "cuda")
    assert settings("--model", "m", "--recipe", "pretrained-cpu", "--lr", "1e-4")["lr"] == 1e-4
    # pretrained-cpu: 2 epochs in stage 1, 1 in stage 3; --epochs sets both, --stage1-epochs stage 1 alone
    cpu = ("--model", "m", "--recipe", "pretrained-cpu")
    for argv, stage1, stage3 in [((), 2, 1), (("--epochs", "3"), 3, 3), (("--stage1-epochs", "4"), 4, 1),
                                 (("--epochs", "3", "--stage1-epochs", "4"), 4, 3)]:
        assert (settings(*cpu, *argv, stage_name="stage1")["epochs"], settings(*cpu, *argv)["epochs"]) == (stage1, stage3)


def test_the_irreversible_switch_reaches_stage_2():
    parse = step.build_parser().parse_args
    assert step.config(pipeline.PipelineConfig, parse(["pipeline", "--irreversible", "undo"])).irreversible == "undo"
    assert pipeline.PipelineConfig().irreversible == "end"
    assert parse(["synthesize", "--model", "m", "--out", "o", "--teacher-url", "u"]).irreversible == "end"
    with pytest.raises(SystemExit):
        step.build_parser().parse_args(["pipeline", "--irreversible", "later"])


def test_the_step_undo_variant_gets_a_stage_2_of_its_own(tmp_path, monkeypatch):
    """step-undo trains on a second stage 2 that takes wrong irreversible steps back; step keeps the
    pipeline's own (--irreversible, end by default). The stages' commands, recorded."""
    calls = []
    monkeypatch.setattr(pipeline, "train", lambda cfg: calls.append(("train", Path(cfg.out).name, cfg)))
    monkeypatch.setattr(pipeline, "synthesize", lambda agent, teacher, out, **options: calls.append(
        ("synthesize", Path(out).name, options)))
    monkeypatch.setattr(pipeline, "evaluate", lambda agent, out: calls.append(("evaluate", Path(out).name, agent)))
    monkeypatch.setattr(pipeline, "split_d1_u2", lambda *a, **k: ([], []))
    args = step.build_parser().parse_args(["pipeline", "--quick", "--model", "m", "--teacher-url", "http://t",
                                           "--variants", "golden-only", "step", "step-undo"])
    cfg = step.config(pipeline.PipelineConfig, args)
    pipeline.run_seed(cfg, tmp_path, 0, pipeline.PRESETS["quick"], common={"env": "sciworld"})
    stage2 = [(name, options["irreversible"]) for c, name, options in calls if c == "synthesize"]
    assert stage2 == [("reflected.jsonl", "end"), ("reflected-undo.jsonl", "undo")]
    stage3 = {name: [Path(d).name for d in a.data] for c, name, a in calls if c == "train" and name != "base"}
    assert stage3 == {"golden-only": ["d1.jsonl", "u2_golden.jsonl"], "step": ["d1.jsonl", "reflected.jsonl"],
                      "step-undo": ["d1.jsonl", "reflected-undo.jsonl"]}
    assert {Path(a.model).name for c, _, a in calls if c == "evaluate"} == {"base", "golden-only", "step", "step-undo"}
    calls.clear()
    cfg.irreversible, cfg.variants = "undo", ["golden-only"]
    pipeline.run_seed(cfg, tmp_path, 0, pipeline.PRESETS["quick"], common={"env": "sciworld"})
    assert [(name, o["irreversible"]) for c, name, o in calls if c == "synthesize"] == [("reflected.jsonl", "undo")]


def test_the_student_url_reaches_the_agent_of_eval_and_synthesize():
    parse = step.build_parser().parse_args
    assert step.config(AgentConfig, parse(["eval", "--model", "m", "--out", "o", "--student-url", "http://s/v1"])) == \
        AgentConfig(model="m", student_url="http://s/v1")
    synthesize = parse(["synthesize", "--model", "m", "--out", "o", "--teacher-url", "t", "--student-url", "u"])
    assert step.config(AgentConfig, synthesize).student_url == "u"
