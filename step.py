"""STeP: train LLM agents on self-reflected trajectories with partial masking.

    python step.py pipeline [--quick]                   # the whole method on the built-in default
    python step.py golden --env E --split S --out FILE  # golden trajectories from the engine's expert
    python step.py train --model DIR --data FILE [FILE ...] --out DIR
    python step.py synthesize --model DIR --env E --teacher-url URL --out FILE
    python step.py eval --model DIR --env E --split S --out DIR
    python step.py teacher --port P                     # the scripted oracle teacher on loopback

Each command is a function of the parsed Namespace, so it can be called from Python too:
`train(command_args("train", model=..., data=[...], out=...))`.
"""
import argparse
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import envs
from data import (IGNORE_INDEX, append_jsonl, build_samples, collate, encode_prompt, length_grouped_batches,
                  load_trajectories, marked_for_training, padding_fraction, read_jsonl, render_turn)
from oracle import oracle_verdict, serve_oracle_teacher
from teacher import TeacherClient, teacher_prompt
from model import (CachedDecoder, ModelArgs, Tokenizer, Transformer, load_model, replace_dir, save_model,
                   train_tokenizer)

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
               "generation_config.json")
# Settings a resumed run must share with the interrupted one (the data itself is checked by digest).
RESUME_SETTINGS = ("epochs", "lr", "warmup", "weight_decay", "batch_tokens", "grad_accum", "max_len",
                   "mask_errors", "reflection", "seed", "memory", "dtype")


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


def write_atomic(path, text):
    """Write a whole file through a temporary one, so a reader never sees half of it."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


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
    files = [Path(model_dir) / name for name in MODEL_FILES]
    if not files[0].exists():
        raise StepError(f"{model_dir}: no tokenizer.model (--model must be a Hugging Face LLaMA "
                        "directory with its sentencepiece tokenizer)")
    return [f for f in files if f.exists()]


def diverged(step, loss, grad_norm, checkpoint):
    kept = "no checkpoint was saved yet"
    if checkpoint.exists():
        last = torch.load(checkpoint / "training_state.pt", weights_only=True)["step"]
        kept = f"the last good checkpoint, step {last}, is kept in {checkpoint} (--resume continues from it)"
    return StepError(f"step {step}: the loss is {loss} (gradient norm {grad_norm}); training stopped. "
                     f"A lower --lr or a look at the data may help; {kept}.")


def load_samples(args):
    """Token ids and labels of every trajectory in --data, and what build_samples counted."""
    tokenizer = Tokenizer(Path(args.model) / "tokenizer.model")
    trajectories = [t for path in args.data for t in load_trajectories(path, keep=marked_for_training)]
    unmarked = sum(not marked_for_training(r) for path in args.data for r in read_jsonl(path))
    if unmarked:
        print(f"train: {unmarked} episodes not marked for training (unsuccessful) left out", file=sys.stderr)
    return build_samples(tokenizer, trajectories, args.max_len, args.mask_errors, args.reflection)


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
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}")
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

def env_options(args):
    """Environment options from the command line: --task-types narrows the task families (SciWorld),
    --max-steps overrides the environment's episode limit."""
    options = {"tasks": args.task_types.split(",")} if args.task_types else {}
    return {**options, "max_steps": args.max_steps} if args.max_steps else options


def select_tasks(env_name, task_ids, n=None, task_file=None):
    """The tasks to run: those listed in task_file, else the first n taken round-robin across task
    families, so a small n still covers every family."""
    if task_file:
        wanted = [line.strip() for line in Path(task_file).read_text().splitlines() if line.strip()]
        unknown = sorted(set(wanted) - set(task_ids))
        if unknown:
            raise StepError(f"{task_file}: unknown task ids for this split: {unknown[:5]}")
        return wanted
    families = {}
    for task_id in task_ids:
        families.setdefault(envs.task_family(env_name, task_id), []).append(task_id)
    interleaved = [t for group in itertools.zip_longest(*families.values()) for t in group if t is not None]
    return interleaved[:n] if n else interleaved


def make_policy(model, tokenizer, max_new_tokens):
    """The agent: one batched, greedy generate per step over all live episodes, each episode's KV
    cache kept across its turns."""
    decoder = CachedDecoder(model)

    def policy(histories, keys):
        prompts = [encode_prompt(tokenizer, h) for h in histories]
        replies = decoder.generate(keys, prompts, max_new_tokens, eos_id=tokenizer.eos_id)
        return [tokenizer.decode(r) for r in replies]
    return policy


def load_agent(path, device):
    model = load_model(path, device=device, dtype=torch.float32 if device == "cpu" else torch.bfloat16).eval()
    return model, Tokenizer(Path(path) / "tokenizer.model")


def finished_ids(path):
    return {t["task"] for t in read_jsonl(path)} if Path(path).exists() else set()


def run_agent(args, out_file, judge=None, max_corrections=0, mark=lambda trajectory: trajectory):
    """Episodes of the agent in --model on the selected tasks, appended to out_file as they finish."""
    model, tokenizer = load_agent(args.model, args.device)
    new_env = functools.partial(envs.make_env, args.env, args.split, **env_options(args))
    spare = [new_env()]  # lists the tasks, then serves as the first slot's env (a JVM start saved)
    task_ids = select_tasks(args.env, spare[0].task_ids(), args.tasks, args.task_file)
    try:
        envs.run_episodes(make_policy(model, tokenizer, args.max_new_tokens),
                          lambda: spare.pop() if spare else new_env(), task_ids, parallel=args.parallel,
                          judge=judge, max_corrections=max_corrections, max_invalid=args.max_invalid,
                          done_ids=finished_ids(out_file), on_episode=lambda t: append_jsonl(out_file, mark(t)))
    finally:
        for env in spare:  # unused when every task was already done
            env.close()
    selected = set(task_ids)
    return [t for t in read_jsonl(out_file) if t["task"] in selected]


# ----------------------------------------------------------------------------- golden / eval / synthesize / teacher

def golden(args):
    """Golden trajectories from the engine's expert, verified by the engine, appended as they come."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = envs.make_env(args.env, args.split, **env_options(args))
    done = finished_ids(out)
    todo = [t for t in select_tasks(args.env, env.task_ids(), args.tasks, args.task_file) if t not in done]
    failures = 0
    for task_id in tqdm(todo, desc=f"golden {args.env}/{args.split}", unit="task"):
        try:
            append_jsonl(out, envs.golden_trajectory(env, task_id))
        except Exception as error:  # one bad task or a crashed engine must not end the run
            failures += 1
            log.warning("golden %s failed: %s", task_id, error)
            env.close()
            env = envs.make_env(args.env, args.split, **env_options(args))
    env.close()
    log.info("golden: %d written, %d already there, %d failed -> %s", len(todo) - failures, len(done), failures, out)


def evaluate(args):
    """Greedy evaluation: one JSON line per episode in --out/episodes.jsonl, then summary.json."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    episodes = run_agent(args, out / "episodes.jsonl")
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


def synthesize(args):
    """Stage 2: the student acts, the teacher judges every step over HTTP and corrects wrong ones."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    client = TeacherClient(args.teacher_url, args.teacher_model, timeout=args.teacher_timeout,
                                max_in_flight=args.parallel)
    goldens = teacher_reference_lookup(args)

    def judge(step):
        return client.judge(step, reference=args.teacher_reference, golden=goldens.get(step["task_id"]))
    episodes = run_agent(args, out, judge, args.max_corrections, mark=lambda t: {**t, "train": t["success"]})
    summary = synthesis_summary(episodes)
    print(json.dumps(summary, indent=2))
    return summary


def synthesis_summary(episodes):
    n = max(len(episodes), 1)
    calls = sum(e.get("teacher_calls", 0) for e in episodes)
    return {
        "episodes": len(episodes),
        "success_rate": sum(e["success"] for e in episodes) / n,
        "errors_per_episode": sum(e.get("errors", 0) for e in episodes) / n,
        "unjudged_steps": sum(e.get("unjudged", 0) for e in episodes),
        "teacher_calls": calls,
        "teacher_latency_s_per_call": sum(e.get("teacher_latency_s", 0.0) for e in episodes) / max(calls, 1),
        "kept_for_training": sum(e["success"] for e in episodes),
    }


def teacher(args):
    """Serve the scripted oracle teacher on loopback until interrupted."""
    server = serve_oracle_teacher(args.host, args.port)
    host, port = server.server_address[:2]
    print(f"oracle teacher at http://{host}:{port} (POST /chat/completions); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


# ----------------------------------------------------------------------------- pipeline

# The built-in default: short SciWorld task families a tiny model can learn on a CPU
# (../shared/notes/default-run.md), a small LLaMA from scratch, the oracle teacher on loopback.
PRESETS = {
    "quick": dict(task_types="find-non-living-thing,lifespan-longest-lived,lifespan-shortest-lived,"
                  "lifespan-longest-lived-then-shortest-lived",
                  train_tasks=160, test_tasks=40, stage1_epochs=20, stage3_epochs=6),
    "full": dict(task_types="find-non-living-thing,lifespan-longest-lived,lifespan-shortest-lived,"
                 "lifespan-longest-lived-then-shortest-lived,find-living-thing,find-plant",
                 train_tasks=360, test_tasks=90, stage1_epochs=20, stage3_epochs=10),
}
SCRATCH_MODEL = dict(dim=128, n_layers=2, n_heads=4, hidden_dim=352, tie_embeddings=True, max_seq_len=4096)
SCRATCH_VOCAB = 1024
VARIANTS = {  # name: (training data beside D1, mask errors, keep reflections)
    "golden-only": ("u2_golden.jsonl", True, True),
    "step": ("reflected.jsonl", True, True),
    "step-nomask": ("reflected.jsonl", False, True),
    "step-noreflection": ("reflected.jsonl", True, False),
}
DEFAULT_VARIANTS = ["golden-only", "step", "step-nomask"]
EVAL_SPLITS = {"sciworld": ["test"], "alfworld": ["valid_seen", "valid_unseen"], "webshop": ["test"]}


def stage(name):
    log.info("=" * 20 + " %s", name)


def split_d1_u2(golden_file, run, seed):
    """U1/U2: about half of each task family's training tasks, chosen by seed (kept once written)."""
    d1_file, u2_file = run / "d1.jsonl", run / "u2_golden.jsonl"
    if not u2_file.exists():
        rng = random.Random(seed)
        families = {}
        for t in load_trajectories(golden_file):
            families.setdefault(envs.task_family(t["env"], t["task"]), []).append(t)
        for group in families.values():
            rng.shuffle(group)
        ordered = [t for group in families.values() for t in group]
        d1, u2 = ordered[0::2], ordered[1::2]  # alternating: each family halved, the totals too
        write_atomic(d1_file, "".join(json.dumps(t) + "\n" for t in d1))
        (run / "u2_tasks.txt").write_text("".join(t["task"] + "\n" for t in u2))
        write_atomic(u2_file, "".join(json.dumps(t) + "\n" for t in u2))  # last: its presence marks the split done
    return load_trajectories(d1_file), load_trajectories(u2_file)


def tokenizer_texts(trajectories):
    """Text for a from-scratch tokenizer: the trajectories, and the oracle teacher's reflections on
    made-up mistakes (so reflections are not spelled out byte by byte later)."""
    texts = [m["content"] for t in trajectories for m in t["messages"]]
    for t in trajectories[:200]:
        actions = [envs.parse_action(m["content"]) for m in t["messages"] if m["role"] == "assistant"]
        for wrong, right in zip(actions[1:] + actions[:1], actions):
            step = {"instruction": "", "task": "", "history": [], "reply": f"Action: {wrong}", "thought": None,
                    "action": wrong, "observation": "No known action matches that input.", "expert_before": right,
                    "expert_after": right}
            verdict = oracle_verdict(teacher_prompt(step)[-1]["content"])
            if verdict["verdict"] == "wrong":
                texts.append(render_turn(verdict["action"], verdict["thought"], verdict["reflection"]))
    return texts


def scratch_model(run, trajectories, seed):
    """A small LLaMA from scratch and its tokenizer, saved like any Hugging Face checkpoint."""
    path = run / "init"
    if (path / "config.json").exists():
        return path
    tmp = run / "init-tokenizer.model"
    tokenizer = train_tokenizer(tokenizer_texts(trajectories), tmp, SCRATCH_VOCAB)
    torch.manual_seed(seed)
    model = Transformer(ModelArgs(vocab_size=tokenizer.vocab_size, **SCRATCH_MODEL))
    for name, p in model.named_parameters():  # GPT-2 style init: small weights train faster from scratch
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)
    (run / "tokenizer.model").write_bytes(tmp.read_bytes())
    save_model(model, path, files=[run / "tokenizer.model"])
    tmp.unlink()
    n = sum(p.numel() for p in model.parameters())
    log.info("scratch model: %.2fM parameters, vocabulary %d -> %s", n / 1e6, tokenizer.vocab_size, path)
    return path


@contextlib.contextmanager
def teacher_endpoint(url):
    """The given teacher URL, or the oracle teacher served on loopback for the duration."""
    if url:
        yield url
        return
    server = serve_oracle_teacher("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def training_settings(args, epochs):
    """Stage 1 and 3 hyper-parameters: the ETO recipe for a real checkpoint, a from-scratch recipe
    for the built-in tiny model; --lr/--epochs/--batch-tokens override either."""
    scratch = args.model is None
    return dict(lr=args.lr or (3e-3 if scratch else 2e-5), epochs=args.epochs or (epochs if scratch else 3),
                batch_tokens=args.batch_tokens or (8192 if scratch else 4096), grad_accum=1 if scratch else 16,
                max_len=4096, warmup=0.03, seed=args.seed, device=args.device,
                threads=args.threads, grad_ckpt=not scratch, save_every=0 if scratch else 50)


def pipeline(args):
    """STeP end to end: golden data, stage 1 (SFT on D1), stage 2 (self-reflected trajectories on
    U2), stage 3 (STeP and the baselines), evaluation on held-out tasks, a results table."""
    preset = PRESETS["quick" if args.quick else "full"]
    run = Path(args.out or ("runs/quick" if args.quick else "runs/default"))
    run.mkdir(parents=True, exist_ok=True)
    task_types = args.task_types or (preset["task_types"] if args.env == "sciworld" else None)
    common = dict(env=args.env, task_types=task_types, device=args.device, parallel=args.parallel,
                  max_steps=args.max_steps)

    stage("1/7 golden trajectories (the engine's expert, train split)")
    golden_file = Path(args.golden) if args.golden else run / "golden.jsonl"
    if not args.golden:
        golden(command_args("golden", split="train", tasks=args.train_tasks or preset["train_tasks"], out=golden_file,
                            **common))
    d1, u2 = split_d1_u2(golden_file, run, args.seed)
    log.info("D1: %d golden trajectories, U2: %d tasks", len(d1), len(u2))

    stage("2/7 the model")
    model_dir = Path(args.model) if args.model else scratch_model(run, d1 + u2, args.seed)

    stage("3/7 stage 1: SFT on D1 -> the base agent")
    train(command_args("train", model=model_dir, data=[run / "d1.jsonl"], out=run / "base",
                       **training_settings(args, preset["stage1_epochs"])))

    stage("4/7 stage 2: self-reflected trajectories on U2, teacher watching every step")
    with teacher_endpoint(args.teacher_url) as url:
        synthesize(command_args("synthesize", model=run / "base", split="train", task_file=run / "u2_tasks.txt",
                                teacher_url=url, teacher_model=args.teacher_model, out=run / "reflected.jsonl",
                                teacher_reference=args.teacher_reference, golden=args.golden,
                                max_corrections=args.max_corrections, max_invalid=args.max_invalid, **common))

    stage("5/7 stage 3: STeP and the baselines, same seed and budget")
    start_from = run / "base" if args.stage3_from == "base-agent" else model_dir
    for name in args.variants:
        extra, mask_errors, reflection = VARIANTS[name]
        train(command_args("train", model=start_from, data=[run / "d1.jsonl", run / extra], out=run / name,
                           mask_errors=mask_errors, reflection=reflection,
                           **training_settings(args, preset["stage3_epochs"])))

    stage("6/7 evaluation on held-out tasks")
    summaries = {}
    for name in ["base", *args.variants]:
        for split in EVAL_SPLITS[args.env]:
            out = run / "eval" / name / (split if len(EVAL_SPLITS[args.env]) > 1 else "")
            summaries[name] = {**summaries.get(name, {}), **evaluate(command_args(
                "eval", model=run / name, split=split, tasks=args.test_tasks or preset["test_tasks"], out=out,
                max_invalid=args.max_invalid, **common))}

    stage("7/7 results")
    write_results(run, args, summaries)


def write_results(run, args, summaries):
    """results.json and results.md: a row per variant and evaluation split, data sizes beside scores."""
    rows = []
    for name, summary in summaries.items():
        trained = json.loads((run / name / "train_summary.json").read_text())
        for env_split, metric in summary.items():
            rows.append({"variant": name, "split": env_split.split("/")[1], "score": metric["metric"],
                         "success_rate": metric["success_rate"], "episodes": metric["episodes"],
                         "trained_trajectories": trained["data"]["samples"], "trained_tokens": trained["tokens"],
                         "trainable_tokens": trained["trainable_tokens"]})
    results = {"env": args.env, "seed": args.seed, "quick": args.quick, "rows": rows}
    write_json(run / "results.json", results)
    columns = ["variant", "split", "score", "success %", "episodes", "trained trajectories", "tokens", "trainable tokens"]
    table = "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|\n" + "".join(
        f"| {r['variant']} | {r['split']} | {r['score']:.1f} | {r['success_rate']:.1f} | {r['episodes']} | "
        f"{r['trained_trajectories']} | {r['trained_tokens']} | {r['trainable_tokens']} |\n" for r in rows)
    write_atomic(run / "results.md", f"# STeP on {args.env} (seed {args.seed})\n\n" + table)
    print("\n" + table)


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
                   help="Hugging Face LLaMA directory (config.json, safetensors, tokenizer.model)")
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


def add_agent_options(p, split_default):
    """Options of every command that runs an agent in an environment."""
    p.add_argument("--env", default="sciworld", choices=sorted(envs.ENVS))
    p.add_argument("--split", default=split_default, help="train, dev/seen or test/unseen (ALFWorld: valid_seen...)")
    p.add_argument("--tasks", type=positive_int, default=None, help="the first N tasks, round-robin over task families")
    p.add_argument("--task-file", default=None, help="a file of task ids, one a line (instead of --tasks)")
    p.add_argument("--task-types", default=None, help="comma-separated SciWorld task families to draw from")
    p.add_argument("--parallel", type=positive_int, default=8, help="episodes at once (one batched generate per step)")
    p.add_argument("--max-invalid", type=positive_int, default=None,
                   help="end an episode after this many invalid actions in a row")
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="reply length limit per turn")
    p.add_argument("--max-steps", type=positive_int, default=None, help="episode limit (default: the environment's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", required=True)


def add_teacher_options(p, required):
    p.add_argument("--teacher-url", required=required, default=None,
                   help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (key: $STEP_TEACHER_API_KEY "
                        "or $OPENAI_API_KEY); the pipeline serves the oracle teacher when it is absent")
    p.add_argument("--teacher-model", default="oracle", help="the model name the teacher endpoint serves")
    p.add_argument("--teacher-reference", default="expert", choices=["expert", "golden", "none"],
                   help="what the teacher is shown as a reference: the expert's next action, the golden trajectory, nothing")
    p.add_argument("--teacher-timeout", type=float, default=120.0, help="seconds per teacher request")
    p.add_argument("--golden", default=None, help="golden trajectories (our JSONL) of the tasks: the teacher's "
                   "reference with --teacher-reference golden; the pipeline's D1/U2 instead of the engine's expert")
    p.add_argument("--max-corrections", type=positive_int, default=5, help="teacher corrections per episode at most")


def add_commands(commands):
    """All commands but train: {name: subparser}."""
    parsers = {}
    p = parsers["golden"] = commands.add_parser("golden", help="golden trajectories from the engine's expert",
                                                description=golden.__doc__)
    add_agent_options(p, "train")
    p.set_defaults(run=golden)

    p = parsers["eval"] = commands.add_parser("eval", help="greedy evaluation of an agent", description=evaluate.__doc__)
    p.add_argument("--model", required=True, help="Hugging Face LLaMA directory with tokenizer.model")
    add_agent_options(p, "test")
    p.set_defaults(run=evaluate)

    p = parsers["synthesize"] = commands.add_parser("synthesize", help="stage 2: self-reflected trajectories",
                                                    description=synthesize.__doc__)
    p.add_argument("--model", required=True, help="the base agent (stage 1 output)")
    add_agent_options(p, "train")
    add_teacher_options(p, required=True)
    p.set_defaults(run=synthesize)

    p = parsers["teacher"] = commands.add_parser("teacher", help="serve the scripted oracle teacher", description=teacher.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=teacher)

    p = parsers["pipeline"] = commands.add_parser("pipeline", help="the whole method end to end", description=pipeline.__doc__)
    p.add_argument("--quick", action="store_true", help="the small default: under 15 minutes on 2 CPU cores")
    p.add_argument("--out", default=None, help="run directory (default runs/quick or runs/default)")
    p.add_argument("--env", default="sciworld", choices=sorted(envs.ENVS))
    p.add_argument("--task-types", default=None, help="task families (default: the preset's short SciWorld tasks)")
    p.add_argument("--model", default=None, help="start from this checkpoint (e.g. LLaMA-2-7B-Chat) instead of a scratch model")
    add_teacher_options(p, required=False)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                   help="stage 3 variants to train and evaluate beside the base agent")
    p.add_argument("--stage3-from", choices=["base-agent", "model"], default="base-agent",
                   help="stage 3 continues the base agent (cheap), or starts from --model as in the paper")
    p.add_argument("--train-tasks", type=positive_int, default=None, help="training tasks (D1 + U2); default: the preset's")
    p.add_argument("--test-tasks", type=positive_int, default=None, help="held-out evaluation tasks; default: the preset's")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-tokens", type=positive_int, default=None)
    p.add_argument("--parallel", type=positive_int, default=8)
    p.add_argument("--max-invalid", type=positive_int, default=5)
    p.add_argument("--max-steps", type=positive_int, default=None, help="episode limit (default: the environment's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads; default: physical cores")
    p.set_defaults(run=pipeline)
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
