"""distributed.py on the CPU, 2 gloo ranks launched as torchrun launches them: training with FSDP2
against one process (same losses and weights), a 2-rank run stopped and resumed on 1 rank, lean's
per-rank rounding noise across a resume, and a 2-rank evaluation merged in task order. Those are slow:
each torchrun launch starts two Python processes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pipeline
import step
from data import read_jsonl
from model import ModelArgs, Transformer, load_model, save_model, train_tokenizer
from rollout import AgentConfig, part_file
from test_train import make_tiny
from train import LOG, SUMMARY, TrainConfig, load_samples, resolve_defaults, train, training_plan

REPO = Path(__file__).resolve().parents[1]
# 14 samples, one a micro-batch of 256 tokens: each epoch's windows hold 3, 3, 3, 3 and 2 micro-batches,
# so that in a window of 3 one rank of two runs an empty one. Checkpointing on, as the GPU recipe trains.
OPTIONS = dict(epochs=2, lr=3e-3, warmup=0.1, grad_accum=3, batch_tokens=256, max_len=256, grad_ckpt=True,
               save_every=0, threads=1, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """test_train's data and tiny model, with tied embeddings (as the scratch student), and its run in
    one process, uninterrupted (tiny.one)."""
    tiny = make_tiny(tmp_path_factory.mktemp("tiny"), tie_embeddings=True)
    tiny.one = tiny.root / "one"
    train(TrainConfig(model=tiny.model, data=[tiny.data], out=tiny.one, **OPTIONS))
    return tiny


def torchrun_train(tiny, out, *extra, **options):
    """step.py train on 2 ranks, as a user runs it."""
    options = {**OPTIONS, **options}
    flags = ["--grad-ckpt" if options.pop("grad_ckpt") else "--no-grad-ckpt"]
    flags += [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "step.py",
               "train", "--model", str(tiny.model), "--data", str(tiny.data), "--out", str(out), *flags, *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def assert_close_weights(a, b, rtol):
    for (name, x), y in zip(load_model(a).state_dict().items(), load_model(b).state_dict().values()):
        x, y = x.float(), y.float()
        assert (x - y).abs().max() <= rtol * x.abs().max(), name


def without(keys, records):
    return [{k: v for k, v in r.items() if k not in keys} for r in records]


def assert_same_losses(a, b, rtol=1e-5):
    a, b = read_jsonl(a / LOG), read_jsonl(b / LOG)
    assert [(r["step"], r["lr"], r["tokens"], r["trainable_tokens"]) for r in a] == \
           [(r["step"], r["lr"], r["tokens"], r["trainable_tokens"]) for r in b]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=rtol)


@pytest.mark.slow
def test_two_ranks_train_as_one_process(tiny, tmp_path):
    """The loss is divided by the trainable tokens of the whole window on both ranks and the ranks'
    gradients are summed: every step's loss and the final weights are one process's, up to the
    order of float sums. One model directory, written by rank 0."""
    cfg = resolve_defaults(TrainConfig(model=tiny.model, data=[tiny.data], out=tmp_path, **OPTIONS))
    plan = training_plan([len(ids) for ids, _ in load_samples(cfg)[0]], 256, 3, 2, cfg.seed)
    assert [[len(batch) for batch in window] for _, window in plan] == [[1, 1, 1]] * 4 + [[1, 1]] + \
        [[1, 1, 1]] * 4 + [[1, 1]]
    torchrun_train(tiny, tmp_path / "two")
    log = read_jsonl(tmp_path / "two" / LOG)
    assert len(log) == 10 and log[-1]["loss"] < 0.5 * log[0]["loss"]  # it learns
    assert_same_losses(tiny.one, tmp_path / "two")
    assert_close_weights(tiny.one, tmp_path / "two", rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in tiny.one.iterdir()) == \
        ["config.json", "model.safetensors", "tokenizer.model", LOG, SUMMARY]
    one, two = (json.loads((d / SUMMARY).read_text()) for d in (tiny.one, tmp_path / "two"))
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)
    assert without({"wall_time_s", "first_loss", "final_loss"}, [two]) == \
        without({"wall_time_s", "first_loss", "final_loss"}, [one])


@pytest.mark.slow
def test_two_rank_run_stopped_and_resumed_on_one_rank(tiny, tmp_path):
    """The checkpoint holds whole tensors (weights and AdamW's moments, gathered on rank 0), so a run
    on 2 ranks goes on in one process and ends with the uninterrupted run's weights."""
    out = tmp_path / "parts"
    torchrun_train(tiny, out, stop_after=4)
    assert len(read_jsonl(out / LOG)) == 4 and not (out / SUMMARY).exists()
    moments = torch.load(out / "checkpoint" / "optimizer.pt", weights_only=True)["state"].values()
    assert sorted(tuple(m["exp_avg"].shape) for m in moments) == \
        sorted(tuple(p.shape) for p in load_model(tiny.model).parameters())
    assert len(torch.load(out / "checkpoint" / "training_state.pt", weights_only=True)["rng"]) == 2
    train(TrainConfig(model=tiny.model, data=[tiny.data], out=out, resume=True, **OPTIONS))
    assert_same_losses(tiny.one, out)
    assert_close_weights(tiny.one, out, rtol=1e-5)
    assert not (out / "checkpoint").exists()


@pytest.mark.slow
def test_lean_on_two_ranks_resumes_with_each_ranks_rounding_noise(tiny, tmp_path):
    """--memory lean sharded: each rank rounds its shards with noise of its own, saved per rank in the
    checkpoint, so a run stopped and resumed on 2 ranks ends bit for bit as the uninterrupted one."""
    torchrun_train(tiny, tmp_path / "whole", memory="lean")
    torchrun_train(tiny, tmp_path / "parts", memory="lean", stop_after=3)
    rng = torch.load(tmp_path / "parts" / "checkpoint" / "training_state.pt", weights_only=True)["rng"]
    assert not torch.equal(rng[0]["cpu"], rng[1]["cpu"])
    torchrun_train(tiny, tmp_path / "parts", "--resume", memory="lean")
    whole, parts = load_model(tmp_path / "whole"), load_model(tmp_path / "parts")
    assert whole.lm_head.weight.dtype == torch.bfloat16
    assert all(torch.equal(x, y) for x, y in zip(whole.state_dict().values(), parts.state_dict().values()))
    assert without({"elapsed"}, read_jsonl(tmp_path / "parts" / LOG)) == \
        without({"elapsed"}, read_jsonl(tmp_path / "whole" / LOG))
    # bf16 weights and arithmetic: the first step's loss is one process's within bf16's precision
    one = tmp_path / "one-lean"
    train(TrainConfig(model=tiny.model, data=[tiny.data], out=one, memory="lean", stop_after=1, **OPTIONS))
    assert read_jsonl(one / LOG)[0]["loss"] == pytest.approx(read_jsonl(tmp_path / "whole" / LOG)[0]["loss"], rel=1e-2)


@pytest.mark.slow
def test_two_rank_eval_writes_every_task_once_in_task_order(tmp_path):
    """pipeline --nproc 2's evaluation: each rank plays its share of ALFWorld's shipped valid_seen games
    into a part file, and rank 0 merges them in the order one process writes. Episodes already written
    (in the file, or in a part of an interrupted launch on 4 ranks) are not played again."""
    texts = ["Thought: I go to the desk.\nAction: go to desk 1", "You arrive at desk 1. You see a pen 1.",
             "Your task is to: put some pen on drawer.", "take pen 1 from desk 1"] * 20
    tok = train_tokenizer(texts, tmp_path / "tokenizer.model", 300)
    torch.manual_seed(0)
    model = Transformer(ModelArgs(dim=32, n_layers=1, n_heads=2, vocab_size=tok.vocab_size, hidden_dim=64))
    save_model(model, tmp_path / "agent", files=[tmp_path / "tokenizer.model"])
    agent = AgentConfig(model=tmp_path / "agent", env="alfworld", split="valid_seen", max_new_tokens=8, max_invalid=2,
                        threads=1)

    pipeline.evaluate(agent, tmp_path / "one")
    one = read_jsonl(tmp_path / "one" / "episodes.jsonl")
    assert len(one) == 6
    two = tmp_path / "two"
    two.mkdir()
    seeded = {1: two / "episodes.jsonl", 4: part_file(two / "episodes.jsonl", 3)}
    for i, path in seeded.items():
        path.write_text(json.dumps({**one[i], "end_reason": "seeded"}) + "\n")
    pipeline.run_on_ranks(2, pipeline.evaluate, agent, two)

    episodes = read_jsonl(two / "episodes.jsonl")
    fields = ("id", "env", "split", "task", "source")
    assert [[e[f] for f in fields] for e in episodes] == [[e[f] for f in fields] for e in one]
    assert [i for i, e in enumerate(episodes) if e["end_reason"] == "seeded"] == [1, 4]
    assert sorted(p.name for p in two.iterdir()) == ["episodes.jsonl", "summary.json"]
    assert json.loads((two / "summary.json").read_text())["alfworld/valid_seen"]["episodes"] == 6


def test_under_torchrun_only_the_rank_commands_run(monkeypatch, tmp_path):
    """golden or the pipeline on every rank would write the same files at once: refused."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="step.py pipeline: error: under torchrun only train, eval, synthesize run"):
        step.main(["pipeline", "--quick", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())
