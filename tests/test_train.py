"""train.py (step.py train): the loss, accumulation, checkpointing, resume, the saved model, partial masking,
the lean optimizer. A tiny LLaMA (dim 64, 2 layers) on hand-written trajectories, on the CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import transformers

from data import IGNORE_INDEX, StepError, build_samples, collate, read_jsonl, render_turn
from model import ModelArgs, Transformer, load_model, save_model, train_tokenizer
from optim import LeanAdamW, estimate_memory
from step import build_parser, config, main
from train import LOG, SUMMARY, TrainConfig, accumulate_gradients, count_trainable, learning_rate, summed_token_loss, train

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "You are an agent in a small text world. Reply with a Thought and an Action."
ROOMS = ["kitchen", "greenhouse", "workshop", "bathroom", "bedroom", "art studio"]
THINGS = ["apple", "orange", "seed", "battery", "red box", "blue jar"]


def message(role, content, loss=False, **extra):
    return {"role": role, "content": content, "loss": loss, **extra}


def trajectory(i, reflected=False):
    """Find a thing in a room; a reflected one first walks into the wrong room and corrects itself."""
    room, thing, wrong = ROOMS[i % 6], THINGS[(i // 2) % 6], ROOMS[(i + 3) % 6]
    messages = [message("system", SYSTEM),
                message("user", f"Task: pick up the {thing} in the {room}.\nYou are in the hallway.")]
    if reflected:
        fix = dict(reflection=f"The {thing} is not in the {wrong}; the task says {room}.",
                   thought=f"I go to the {room}.", action=f"go to {room}")
        messages += [message("assistant", f"Thought: The {thing} must be in the {wrong}.\nAction: go to {wrong}",
                             error=True),
                     message("user", f"You move to the {wrong}. You see a sink and a chair."),
                     message("assistant", render_turn(fix["action"], fix["thought"], fix["reflection"]), True, **fix)]
    else:
        messages.append(message("assistant", f"Thought: The {thing} is in the {room}.\nAction: go to {room}", True))
    messages += [message("user", f"You move to the {room}. You see a {thing} and a table."),
                 message("assistant", f"Thought: There it is.\nAction: pick up {thing}", True)]
    return {"id": f"t{i}{'r' * reflected}", "env": "toy", "task": f"pick up the {thing}", "split": "train",
            "source": "reflected" if reflected else "golden", "messages": messages, "reward": 1.0, "success": True}


def make_tiny(root, tie_embeddings=False):
    """A trajectory file, a sentencepiece tokenizer trained on it and a random tiny model saved with it."""
    trajectories = [trajectory(i) for i in range(10)] + [trajectory(i, reflected=True) for i in range(4)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in trajectories))
    texts = [m["content"] for t in trajectories for m in t["messages"]]
    tok = train_tokenizer(texts * 4, root / "tokenizer.model", 500)
    torch.manual_seed(0)
    model = Transformer(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
                                  hidden_dim=160, max_seq_len=512, tie_embeddings=tie_embeddings))
    save_model(model, root / "base", files=[root / "tokenizer.model"])
    return SimpleNamespace(root=root, data=data, model=root / "base", tok=tok, trajectories=trajectories)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def run_args(tiny, out, **overrides):
    options = dict(model=tiny.model, data=[tiny.data], out=out, epochs=2, lr=3e-3, warmup=0.1, grad_accum=1,
                   batch_tokens=512, max_len=512, grad_ckpt=False, save_every=0, threads=1, device="cpu")
    return TrainConfig(**{**options, **overrides})


def gradients(model, micro_batches):
    model.zero_grad(set_to_none=True)
    loss, n_trainable = accumulate_gradients(model, micro_batches, "cpu")
    return loss, n_trainable, [p.grad.clone() for p in model.parameters()]


# ----------------------------------------------------------------------------- the loss

def test_loss_is_cross_entropy_of_the_shifted_labels(tiny):
    model = load_model(tiny.model)
    samples, _ = build_samples(tiny.tok, tiny.trajectories[:3], 512)
    ids, labels = collate(samples)
    total, n = summed_token_loss(model, ids, labels), count_trainable(labels)
    with torch.no_grad():
        logits = model(ids)
    reference = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                ignore_index=-100)
    assert torch.allclose(total / n, reference, atol=1e-6)
    # The same by hand: the token at t is predicted from the logits at t - 1.
    log_probs = logits.log_softmax(-1)
    manual = [-log_probs[b, t - 1, labels[b, t]] for b, t in (labels != IGNORE_INDEX).nonzero().tolist() if t > 0]
    assert n == len(manual) > 20
    assert torch.allclose(total / n, torch.stack(manual).mean(), atol=1e-6)


def test_accumulation_over_micro_batches_equals_one_batch(tiny):
    model = load_model(tiny.model)
    samples, _ = build_samples(tiny.tok, [tiny.trajectories[i] for i in (0, 1, 10, 11)], 512)
    counts = [count_trainable(collate([s])[1]) for s in samples]
    assert len(set(counts)) > 1, "samples with different trainable tokens, so per-micro-batch means would differ"
    one_loss, one_n, one = gradients(model, [collate(samples)])
    four_loss, four_n, four = gradients(model, [collate([s]) for s in samples])
    assert one_n == four_n == sum(counts)
    assert torch.allclose(one_loss, four_loss, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(one, four))
    # The naive alternative, averaging the micro-batches' own means, is a different number.
    per_batch = [gradients(model, [collate([s])])[0] for s in samples]
    assert abs(torch.stack(per_batch).mean() - one_loss) > 1e-3


def test_window_without_trainable_tokens_gives_zero_loss_not_nan(tiny):
    model = load_model(tiny.model)
    samples, _ = build_samples(tiny.tok, tiny.trajectories[:2], 512)
    ids, labels = collate(samples)
    loss, n, grads = gradients(model, [(ids, torch.full_like(labels, IGNORE_INDEX))])
    assert n == 0 and loss.item() == 0.0 and all(torch.all(g == 0) for g in grads)


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    model = load_model(tiny.model).train()
    samples, _ = build_samples(tiny.tok, tiny.trajectories[:4], 512)
    calls = []
    model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    model.grad_ckpt = False
    _, _, plain = gradients(model, [collate(samples)])
    assert len(calls) == 1
    model.grad_ckpt = True
    _, _, recomputed = gradients(model, [collate(samples)])
    assert len(calls) == 3, "with checkpointing the block runs again in backward"
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(plain, recomputed))


def test_partial_masking_reaches_the_loss(tiny):
    """In a reflected trajectory the erroneous step gets no gradient with --mask-errors, and does without."""
    model = load_model(tiny.model)
    reflected = [tiny.trajectories[10]]
    [(ids, masked)], _ = build_samples(tiny.tok, reflected, 512, mask_errors=True)
    [(ids_unmasked, unmasked)], _ = build_samples(tiny.tok, reflected, 512, mask_errors=False)
    assert ids == ids_unmasked
    error_positions = [t for t, (a, b) in enumerate(zip(masked, unmasked)) if a == IGNORE_INDEX != b]
    error_step = reflected[0]["messages"][2]
    assert error_step["error"] and tiny.tok.decode([ids[t] for t in error_positions]).strip() == error_step["content"]
    assert masked.count(IGNORE_INDEX) < len(masked) - 10, "the reflection and the other steps stay trainable"

    logits = {}

    def keep_positions(module, args, kwargs):
        logits["keep"] = kwargs["keep"]  # the positions whose logits the loss computes

    def keep_logits(module, inputs, out):
        out.retain_grad()
        logits["out"] = out

    model.register_forward_pre_hook(keep_positions, with_kwargs=True)
    model.lm_head.register_forward_hook(keep_logits)
    predicting_error = [t - 1 for t in error_positions]  # the logits that predict the error's tokens
    for labels, masking in ((masked, True), (unmasked, False)):
        gradients(model, [collate([(ids, labels)])])
        keep = logits["keep"]
        grad = torch.zeros(*keep.shape, logits["out"].shape[-1])  # [B, T, vocab], zero where not computed
        grad[keep] = logits["out"].grad
        grad = grad[0]
        assert torch.all(grad[predicting_error] == 0) == masking
        assert grad[error_positions[-1] + 5:].abs().sum() > 0  # the reflection after it is trained either way


def test_mask_errors_option_reaches_the_samples(tiny, tmp_path):
    """train --no-mask-errors trains on exactly the error steps' tokens more than train does."""
    reflected = tiny.trajectories[10:]
    data = tmp_path / "reflected.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in reflected))
    trainable = {}
    for mask in (True, False):
        train(run_args(tiny, tmp_path / f"mask{mask}", data=[data], epochs=1, mask_errors=mask))
        trainable[mask] = json.loads((tmp_path / f"mask{mask}" / SUMMARY).read_text())["trainable_tokens"]
    masked, _ = build_samples(tiny.tok, reflected, 512, mask_errors=True)
    unmasked, _ = build_samples(tiny.tok, reflected, 512, mask_errors=False)
    error_tokens = sum(a.count(IGNORE_INDEX) - b.count(IGNORE_INDEX) for (_, a), (_, b) in zip(masked, unmasked))
    assert error_tokens > 0 and trainable[False] - trainable[True] == error_tokens


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [learning_rate(step, 100, 3, 1.0) for step in range(100)]
    assert lrs[:4] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[51] == pytest.approx(0.5, abs=0.02)
    assert 0 < lrs[-1] < 1e-3


# ----------------------------------------------------------------------------- whole runs

@pytest.fixture(scope="module")
def trained(tiny):
    out = tiny.root / "run"
    model = train(run_args(tiny, out, epochs=12))
    return SimpleNamespace(out=out, model=model)


def test_training_lowers_the_loss_and_logs_every_step(trained):
    log = read_jsonl(trained.out / LOG)
    summary = json.loads((trained.out / SUMMARY).read_text())
    assert [r["step"] for r in log] == list(range(1, summary["steps"] + 1))
    assert set(log[0]) >= {"step", "loss", "lr", "grad_norm", "tokens", "trainable_tokens", "elapsed"}
    assert log[0]["loss"] > 5.0  # about ln(vocab) for a random model
    assert sum(r["loss"] for r in log[-3:]) / 3 < 0.5 * log[0]["loss"]
    assert summary["tokens"] == sum(r["tokens"] for r in log)
    assert summary["trainable_tokens"] == sum(r["trainable_tokens"] for r in log)
    assert 0 < summary["trainable_fraction"] < 1 and 0 <= summary["padding_fraction"] < 1
    assert summary["final_loss"] == log[-1]["loss"]
    assert not (trained.out / "checkpoint").exists()


def test_saved_model_loads_in_transformers_with_the_same_logits(trained, tiny):
    for name in ("config.json", "model.safetensors", "tokenizer.model"):
        assert (trained.out / name).exists()
    assert (trained.out / "tokenizer.model").read_bytes() == (tiny.root / "tokenizer.model").read_bytes()
    ids = torch.tensor([tiny.tok.encode("Task: pick up the seed in the kitchen.", bos=True)])
    reference = transformers.LlamaForCausalLM.from_pretrained(trained.out).eval()
    with torch.no_grad():
        ours = trained.model.eval()(ids)  # the model the loop trained
        assert (ours - reference(ids).logits).abs().max() < 1e-4
        assert torch.equal(ours, load_model(trained.out)(ids))


def test_finished_run_is_not_trained_again(trained, tiny, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in trained.out.iterdir()}
    assert train(run_args(tiny, trained.out, epochs=12)) is None
    assert "nothing to do" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in trained.out.iterdir()} == before


@pytest.mark.parametrize("memory", ["standard", "lean"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny, tmp_path, memory):
    options = dict(epochs=2, lr=1e-3, grad_accum=2, memory=memory, grad_ckpt=True)
    train(run_args(tiny, tmp_path / "whole", **options))

    out = tmp_path / "parts"
    assert train(run_args(tiny, out, stop_after=2, **options)) is None
    assert (out / "checkpoint" / "model.safetensors").exists() and not (out / SUMMARY).exists()
    with pytest.raises(StepError, match="pass --resume"):
        train(run_args(tiny, out, **options))
    with pytest.raises(StepError, match="lr: 0.001 then, 0.002 now"):
        train(run_args(tiny, out, resume=True, **{**options, "lr": 2e-3}))
    train(run_args(tiny, out, resume=True, **options))

    whole, parts = read_jsonl(tmp_path / "whole" / LOG), read_jsonl(out / LOG)
    assert len(whole) >= 4
    assert [(r["step"], r["loss"], r["lr"]) for r in parts] == [(r["step"], r["loss"], r["lr"]) for r in whole]
    a, b = load_model(tmp_path / "whole"), load_model(out)
    assert a.lm_head.weight.dtype == (torch.bfloat16 if memory == "lean" else torch.float32)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tiny, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(StepError, match=r"step \d+: the loss is (nan|inf).*last good checkpoint, step \d+"):
        train(run_args(tiny, out, lr=1e30, warmup=0.0, save_every=1, epochs=3))
    state = torch.load(out / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["step"] >= 1 and not (out / SUMMARY).exists()
    assert len(read_jsonl(out / LOG)) == state["step"]
    load_model(out / "checkpoint")  # complete and loadable


# ----------------------------------------------------------------------------- lean optimizer and memory

def test_lean_adamw_keeps_updates_below_half_a_bf16_ulp():
    """lr 1e-3 on a weight of 1.0: a quarter of bf16's gap below 1.0 (2**-8). Stochastic rounding
    moves the weights by that amount on average; plain bf16 AdamW rounds every update away."""
    torch.manual_seed(0)
    lean, plain = (torch.nn.Parameter(torch.ones(20000, dtype=torch.bfloat16)) for _ in range(2))
    optimizers = LeanAdamW([lean], lr=1e-3), torch.optim.AdamW([plain], lr=1e-3, weight_decay=0.0)
    for _ in range(10):
        for p, optimizer in zip((lean, plain), optimizers):
            p.grad = torch.ones_like(p)
            optimizer.step()
    assert lean.float().mean().item() == pytest.approx(1 - 10 * 1e-3, abs=3e-4)
    assert torch.all(plain == 1.0)


def test_lean_adamw_matches_adamw_within_bf16_precision():
    """Five steps from the same (bf16) start: the weights stay within bf16 rounding noise of
    torch's fp32 AdamW, and that noise is unbiased."""
    torch.manual_seed(0)
    start = torch.randn(8192).bfloat16().float()
    reference, lean = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.bfloat16())
    ref_opt = torch.optim.AdamW([reference], lr=0.05, weight_decay=0.1)
    lean_opt = LeanAdamW([lean], lr=0.05, weight_decay=0.1)
    for _ in range(5):
        grad = torch.randn(8192)
        reference.grad, lean.grad = grad, grad.bfloat16()
        ref_opt.step()
        lean_opt.step()
    reference, lean = reference.detach(), lean.detach().float()
    ulps = (lean - reference).abs() / torch.exp2(torch.floor(torch.log2(torch.maximum(reference.abs(), start.abs()))) - 7)
    assert ulps.mean() < 1 and ulps.max() < 12  # each step's rounding is off by less than one ulp
    assert abs((lean - reference).mean()) < 5e-4  # unbiased
    assert (reference - start).abs().mean() > 0.08  # while the weights moved by ~10 ulps


def test_memory_estimate_for_llama2_7b():
    llama2_7b = ModelArgs()  # the defaults are LLaMA-2-7B's
    standard, lean = estimate_memory(llama2_7b, 4096, "standard"), estimate_memory(llama2_7b, 4096, "lean")
    assert standard["params"] == 6_738_415_616
    assert standard["bytes_per_param"] == 18 and lean["bytes_per_param"] == 8
    assert standard["weights"] + standard["gradients"] + standard["optimizer"] == pytest.approx(107.8, abs=0.1)
    assert lean["weights"] + lean["gradients"] + lean["optimizer"] == pytest.approx(53.9, abs=0.1)
    assert lean["block_inputs"] == pytest.approx(1.07, abs=0.01)
    assert lean["total"] < 70 and standard["total"] > 80


def test_memory_estimate_per_rank_sharded_over_gpus():
    """FSDP2 over N GPUs: weights, gradients and AdamW divided by N, bf16 units gathered instead of
    autocast's copies, one micro-batch's activations per rank. The README's table."""
    llama2_7b, llama2_13b = ModelArgs(), ModelArgs(dim=5120, n_layers=40, n_heads=40, hidden_dim=13824)
    assert estimate_memory(llama2_13b, 4096, "lean")["params"] == 13_015_864_320
    one, eight = estimate_memory(llama2_7b, 4096, "lean"), estimate_memory(llama2_7b, 4096, "lean", ranks=8)
    state = ("weights", "gradients", "optimizer")
    assert sum(eight[k] for k in state) == pytest.approx(sum(one[k] for k in state) / 8)
    root, block = 2 * 32000 * 4096 + 4096, 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    assert eight["gathered_units"] == pytest.approx((root + 2 * block) * (2 + 2) / 1e9) == pytest.approx(2.67, abs=0.01)
    assert (eight["block_activations"], eight["logits"]) == (one["block_activations"], one["logits"])
    assert eight["optimizer_step_temporaries"] == pytest.approx(one["optimizer_step_temporaries"] / 8)
    totals = {(name, mode, n): round(estimate_memory(args, 4096, mode, ranks=n)["total"], 1)
              for name, args in (("7B", llama2_7b), ("13B", llama2_13b)) for mode in ("standard", "lean")
              for n in (1, 2, 4, 8)}
    assert [totals["7B", "standard", n] for n in (1, 2, 4, 8)] == [125.4, 61.0, 34.0, 20.6]
    assert [totals["7B", "lean", n] for n in (1, 2, 4, 8)] == [60.1, 34.3, 20.0, 12.9]
    assert [totals["13B", "standard", n] for n in (1, 2, 4, 8)] == [239.8, 113.8, 61.7, 35.7]
    assert [totals["13B", "lean", n] for n in (1, 2, 4, 8)] == [111.9, 61.7, 34.7, 21.2]


@pytest.mark.parametrize("extra", [{}, dict(n_kv_heads=2, tie_embeddings=True)])
def test_memory_estimate_counts_the_parameters(extra):
    args = ModelArgs(dim=64, n_layers=3, n_heads=4, vocab_size=300, hidden_dim=160, **extra)
    assert estimate_memory(args, 128, "lean")["params"] == sum(p.numel() for p in Transformer(args).parameters())


# ----------------------------------------------------------------------------- command line

def test_command_line_options_and_defaults(tmp_path):
    args = build_parser().parse_args(["train", "--model", "m", "--data", "a.jsonl", "b.jsonl", "--out", "o",
                                      "--no-mask-errors", "--no-grad-ckpt", "--memory", "lean"])
    assert (args.data, args.mask_errors, args.grad_ckpt, args.reflection, args.memory) == \
        (["a.jsonl", "b.jsonl"], False, False, True, "lean")
    assert config(TrainConfig, args) == TrainConfig(model="m", data=["a.jsonl", "b.jsonl"], out="o",
                                                    mask_errors=False, grad_ckpt=False, memory="lean")
    defaults = config(TrainConfig, build_parser().parse_args(["train", "--model", "m", "--data", "a.jsonl", "--out", "o"]))
    assert defaults == TrainConfig(model="m", data="a.jsonl", out="o")
    assert (defaults.epochs, defaults.lr, defaults.warmup, defaults.weight_decay, defaults.max_len) == \
        (3, 2e-5, 0.03, 0.0, 4096)
    assert defaults.grad_ckpt and defaults.mask_errors and defaults.reflection and not defaults.resume
    assert TrainConfig(model="m", data=["a"], out="o", epochs=1).epochs == 1
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        TrainConfig(model="m", data=["a"], out="o", epoch=1)


@pytest.mark.slow
def test_progress_bar_redirected_to_a_file_stays_quiet(tiny, tmp_path):
    """`python step.py train ... 2> log`: 40 epochs are 40 steps, but the bar is drawn at most once
    a minute in a file (its first and last states here), not once a step."""
    command = [sys.executable, "step.py", "train", "--model", str(tiny.model), "--data", str(tiny.data),
               "--out", str(tmp_path / "run"), "--epochs", "40", "--batch-tokens", "512", "--max-len", "512",
               "--threads", "1", "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    log = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True).stderr
    steps = json.loads((tmp_path / "run" / SUMMARY).read_text())["steps"]
    drawn = [part for line in log.splitlines() for part in line.split("\r") if part.startswith("train:") and "|" in part]
    assert steps > 20 and 1 <= len(drawn) <= 3


def test_command_line_reports_a_missing_data_file(tiny, tmp_path):
    with pytest.raises(SystemExit, match="step.py train: error: .*missing.jsonl"):
        main(["train", "--model", str(tiny.model), "--data", str(tmp_path / "missing.jsonl"),
              "--out", str(tmp_path / "out"), "--threads", "1", "--device", "cpu"])
