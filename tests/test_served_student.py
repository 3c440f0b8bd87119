"""The agent served over HTTP (rollout.served_policy, `--student-url`): the prompts go out as the token
ids the agent was trained on, and the replies equal the in-process decoder's on the same checkpoint.
The server here is tests/completions_server.py: a small OpenAI-style /v1/completions on loopback that
runs model.py's greedy generate, as vLLM serves a checkpoint; the pipeline starts it as a command, as it
would start vLLM, for each agent."""
import sys
import threading
from pathlib import Path

import pytest
import requests
import torch

import pipeline
import step
from completions_server import completions_server
from data import encode_prompt
from model import ModelArgs, Transformer, save_model, train_tokenizer
from rollout import make_policy, serve_student, served_policy, stop_ids

pytestmark = pytest.mark.slow  # a server on loopback

SYSTEM = "You are an agent. Reply with a thought and an action."
TEXTS = [SYSTEM, "Your task is to find a plant.", "Thought: I look.\nAction: look around", "You see a fern."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    tok = train_tokenizer(TEXTS * 20 + ["[INST] [/INST] <<SYS>> <</SYS>>"], root / "tokenizer.model", 300)
    torch.manual_seed(0)
    model = Transformer(ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=tok.vocab_size, hidden_dim=160,
                                  max_seq_len=512)).eval()
    save_model(model, root / "model", files=[root / "tokenizer.model"])
    return model, tok


@pytest.fixture
def server(checkpoint):
    model, _ = checkpoint
    httpd = completions_server(model)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd.requests_seen
    httpd.shutdown()
    httpd.server_close()


def test_served_replies_equal_the_in_process_ones(checkpoint, server):
    model, tok = checkpoint
    url, requests_seen = server
    histories = [[{"role": "system", "content": SYSTEM, "loss": False},
                  {"role": "user", "content": task, "loss": False}] for task in TEXTS[1:]]
    keys = [f"episode-{i}" for i in range(len(histories))]
    served = served_policy(url, tok, max_new_tokens=12)(histories, keys)
    assert served == make_policy(model, tok, max_new_tokens=12)(histories, keys)
    [request] = requests_seen
    assert request["prompt"] == [encode_prompt(tok, h) for h in histories]
    assert (request["model"], request["max_tokens"], request["temperature"], request["return_token_ids"]) == (
        "student", 12, 0.0, True)
    assert set(request["stop_token_ids"]) == stop_ids(tok)


def test_a_server_without_a_model_is_refused_by_name():
    with pytest.raises(ValueError, match=r"student server http://127.0.0.1:9/v1: no model listed"):
        served_policy("http://127.0.0.1:9/v1", None, max_new_tokens=4)


SERVE = f"{sys.executable} {Path(__file__).parent / 'completions_server.py'}"


def test_the_pipeline_serves_each_agent_while_its_stage_plays(checkpoint, tmp_path, monkeypatch):
    """--student-server: stage 2 and each evaluation get the URL of the command serving that stage's agent,
    up while the stage plays and stopped after; a finished stage starts no server."""
    seen = []

    def play(kind):
        def stage(agent, *args, **kwargs):
            up = requests.get(f"{agent.student_url}/models", timeout=5).json()["data"][0]["id"] if agent.student_url else None
            seen.append((kind, Path(agent.model).name, agent.student_url, up))
        return stage
    monkeypatch.setattr(pipeline, "train", lambda cfg: save_model(checkpoint[0], cfg.out))
    monkeypatch.setattr(pipeline, "synthesize", play("stage 2"))
    monkeypatch.setattr(pipeline, "evaluate", play("eval"))
    monkeypatch.setattr(pipeline, "split_d1_u2", lambda *a, **k: ([], [{"task": "t/1"}]))
    args = step.build_parser().parse_args(["pipeline", "--quick", "--model", "m", "--teacher-url", "http://t",
                                           "--variants", "step", "--student-server", SERVE])
    cfg = step.config(pipeline.PipelineConfig, args)
    pipeline.run_seed(cfg, tmp_path, 0, pipeline.PRESETS["quick"], common={"env": "sciworld"})
    assert [(kind, name, up) for kind, name, _, up in seen] == [
        ("stage 2", "base", "student"), ("eval", "base", "student"), ("eval", "base", "student"),
        ("eval", "step", "student"), ("eval", "step", "student")]
    urls = [url for *_, url, _ in seen]
    assert len(set(urls)) == 5  # a server of its own for each stage, on a port of its own
    for url in urls:  # each stopped after its stage
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/models", timeout=5)
    assert (tmp_path / "seed-0" / "reflected.jsonl.student-server.log").exists()

    seen.clear()  # finished stages: in-process, no server started
    (tmp_path / "seed-0" / "reflected.jsonl").write_text('{"task": "t/1"}\n')
    for split in ("dev", "test"):
        (tmp_path / "seed-0" / "eval" / "base" / split).mkdir(parents=True, exist_ok=True)
        (tmp_path / "seed-0" / "eval" / "base" / split / "summary.json").write_text("{}")
    pipeline.run_seed(cfg, tmp_path, 0, pipeline.PRESETS["quick"], common={"env": "sciworld"})
    assert [(kind, name, url is None) for kind, name, url, _ in seen] == [
        ("stage 2", "base", True), ("eval", "base", True), ("eval", "base", True), ("eval", "step", False),
        ("eval", "step", False)]


def test_a_student_server_that_exits_stops_the_run_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    command = f"{sys.executable} -c 'import sys; print(\"no GPU here\"); sys.exit(3)'"
    with pytest.raises(RuntimeError, match=f"exited \\(3\\); its log: {log}"):
        with serve_student(command, tmp_path, log):
            pass
    assert log.read_text().strip() == "no GPU here"
