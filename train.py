"""Stages 1 and 3: fine-tune a model on trajectories with partial masking.

    train(TrainConfig(model="models/smollm2-135m", data=["d1.jsonl", "reflected.jsonl"], out="runs/x"))

data.py turns each trajectory into token ids and labels (-100 on every token that is not trained: the
prompt, the observations, and the steps a teacher judged wrong). Here: the loss over the labelled
tokens, the learning-rate schedule, and the loop, with gradient accumulation over micro-batches of
similar length, atomic checkpoints and an exact resume. optim.py holds the lean memory mode.

Under torchrun (`torchrun --nproc-per-node N step.py train ...`) the same loop runs on N ranks:
distributed.py shards the model with FSDP2 and each rank takes its share of every step's
micro-batches; the lines marked "# ranks" are what that adds.
"""
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import distributed
from data import (IGNORE_INDEX, StepError, append_jsonl, build_samples, collate, length_grouped_batches,
                  load_trajectories, marked_for_training, padding_fraction, read_jsonl, write_json)
from model import default_device, load_model, load_tokenizer, physical_cores, replace_dir, save_model
from optim import LeanAdamW


@dataclass
class TrainConfig:
    """A training run: `step.py train`'s options (defaults: ETO's recipe for a 7B on a GPU)."""
    model: str | os.PathLike  # a Hugging Face LLaMA or Qwen2 directory with its tokenizer
    data: list  # trajectory JSONL files
    out: str | os.PathLike  # the trained model, train_log.jsonl, train_summary.json, checkpoint/
    chat_format: str | None = None  # None: the checkpoint's
    epochs: int = 3
    lr: float = 2e-5  # peak learning rate
    warmup: float = 0.03  # linear warm-up, a fraction of the steps; then cosine decay to 0
    weight_decay: float = 0.0  # AdamW's decoupled weight decay, not on norm weights
    batch_tokens: int | None = None  # a micro-batch's token budget, padding included [max_len]
    grad_accum: int = 16  # micro-batches per optimizer step
    max_len: int = 4096  # longer trajectories are truncated at a turn boundary
    grad_ckpt: bool = True  # recompute each block's activations in backward
    dtype: str | None = None  # "bf16" or "fp32" [bf16 on CUDA and with memory "lean", else fp32]
    memory: str = "standard"  # "standard": fp32 weights and AdamW; "lean": see optim.py
    mask_errors: bool = True  # partial masking: no loss on the steps judged wrong
    reflection: bool = True  # keep the reflection in corrected steps
    reflection_placement: str = "line"  # a line of its own before the thought, or the thought's start
    seed: int = 0  # data order (epoch e uses seed + e) and rounding noise
    save_every: int = 50  # steps between checkpoints, 0: none
    stop_after: int | None = None  # stop after this many steps with a checkpoint
    resume: bool = False  # continue from out/checkpoint if there is one
    device: str | None = None  # [cuda if available, else cpu]
    threads: int | None = None  # CPU threads [physical cores]

    def __post_init__(self):
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [self.data]


# ----------------------------------------------------------------------------- the masked loss

def summed_token_loss(model, ids, labels):
    """Sum of the cross-entropies of the trainable tokens. data.py aligns labels with ids; the
    logits at position t predict token t+1, so the labels are shifted by one. Logits are computed
    only where they are trained: most of an agent's tokens are context, and the output layer over a
    large vocabulary (SmolLM2's 49,152) is a fifth of the model's arithmetic."""
    targets = labels[:, 1:]
    trained = targets != IGNORE_INDEX  # [B, T-1]
    logits = model(ids, keep=F.pad(trained, (0, 1)))  # [N, vocab]; the last position predicts nothing
    return F.cross_entropy(logits.float(), targets[trained], reduction="sum")


def count_trainable(labels):
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


# A micro-batch without a trained token: a rank with no micro-batch left in a window runs it, so that
# every rank makes the same collective calls (FSDP gathers and reduces in each forward and backward).
NOTHING_TRAINED = (torch.zeros(1, 2, dtype=torch.long), torch.full((1, 2), IGNORE_INDEX))


def accumulate_gradients(model, micro_batches, device, autocast_dtype=None, n_trainable=None):
    """Forward and backward over one accumulation window of (ids, labels) micro-batches.

    Each micro-batch's summed loss is divided by the trainable tokens of the whole window
    (n_trainable; None: those of micro_batches), so the gradients are those of one batch holding all
    of them; a window without a trainable token adds zero gradient, never NaN. Returns this share of
    the window's mean token loss (a tensor: reading it would synchronise the GPU) and n_trainable."""
    device = torch.device(device)
    if n_trainable is None:
        n_trainable = sum(count_trainable(labels) for _, labels in micro_batches)
    window_loss = torch.zeros((), device=device)
    for ids, labels in micro_batches:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = summed_token_loss(model, ids.to(device), labels.to(device)) / max(n_trainable, 1)
        loss.backward()
        window_loss += loss.detach()
    return window_loss, n_trainable


# ----------------------------------------------------------------------------- schedule and data order

def learning_rate(step, total_steps, warmup_steps, peak):
    """Linear warm-up to `peak`, then cosine decay towards 0 (ETO's recipe, like transformers'
    cosine schedule). `step` counts from 0; unlike transformers, no step gets a learning rate of 0."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def training_plan(lengths, batch_tokens, grad_accum, epochs, seed):
    """Every optimizer step in order, as (epoch, micro-batches of sample indices). Epoch e groups its
    batches with seed + e, so the order is a function of the seed and a step number is a position in
    it. An epoch's last step may hold fewer micro-batches."""
    plan = []
    for epoch in range(epochs):
        batches = length_grouped_batches(lengths, batch_tokens, seed + epoch)
        plan += [(epoch, batches[i:i + grad_accum]) for i in range(0, len(batches), grad_accum)]
    return plan


# ----------------------------------------------------------------------------- the loop

SUMMARY = "train_summary.json"
LOG = "train_log.jsonl"


def train(config: TrainConfig):
    """Fine-tune config.model on the trajectories in config.data; the trained model goes to config.out.

    Returns the trained Transformer (sharded under torchrun), or None when out holds a finished run
    (nothing is done) or the run stopped early at stop_after (its checkpoint is in out/checkpoint)."""
    cfg = resolve_defaults(config)
    backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
    device = torch.device(distributed.start(cfg.device, backend, distributed.TRAIN_TIMEOUT))  # ranks: cuda:LOCAL_RANK
    main = distributed.is_main()  # ranks: rank 0 writes the files
    out = Path(cfg.out)
    if (out / SUMMARY).exists():
        print(f"{out}: training already finished ({SUMMARY} is there); nothing to do", file=sys.stderr)
        return None
    resume = prepare_output(out, cfg.resume)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + distributed.rank())  # ranks: each its own rounding noise
    checkpoint, log_path, files = out / "checkpoint", out / LOG, model_files(cfg.model)

    samples, data_stats = load_samples(cfg)
    lengths = [len(ids) for ids, _ in samples]
    trainable = [sum(label != IGNORE_INDEX for label in labels[1:]) for _, labels in samples]
    plan = training_plan(lengths, cfg.batch_tokens, cfg.grad_accum, cfg.epochs, cfg.seed)
    fingerprint = run_fingerprint(cfg, samples, plan)
    state = load_training_state(checkpoint, fingerprint) if resume else {"step": 0, "elapsed": 0.0}

    weight_dtype = torch.bfloat16 if cfg.memory == "lean" else torch.float32
    compute_dtype = torch.bfloat16 if cfg.dtype == "bf16" else None
    if distributed.launched():  # ranks: FSDP2 gathers the weights in compute_dtype (no autocast)
        model = distributed.load_sharded_model(checkpoint if resume else cfg.model, device, weight_dtype, compute_dtype)
    else:
        model = load_model(checkpoint if resume else cfg.model, device, weight_dtype)
    autocast_dtype = compute_dtype if cfg.memory == "standard" and not distributed.launched() else None
    model.train()
    model.grad_ckpt = cfg.grad_ckpt
    optimizer = make_optimizer(model, cfg)
    if resume:
        # load_state_dict moves each state tensor to its parameter's device; ranks: each keeps its shards
        # (mmap: the ranks read one copy of the file through the page cache, not one a rank in memory)
        distributed.load_optimizer_state(optimizer, torch.load(checkpoint / "optimizer.pt", weights_only=True,
                                                               map_location="cpu", mmap=True))
        set_rng_state(state["rng"], cfg.seed)

    total_steps = len(plan)
    warmup_steps = math.ceil(cfg.warmup * total_steps)
    stop_at = min(total_steps, cfg.stop_after or total_steps)
    if main:
        truncate_log(log_path, state["step"])
        print(f"train: {data_stats['trajectories']} trajectories -> {len(samples)} samples, {total_steps} steps "
              f"({cfg.epochs} epochs), {cfg.memory} memory, {cfg.dtype} on {device}"
              + (f", {distributed.world_size()} ranks" if distributed.launched() else ""), file=sys.stderr)
    start = time.time() - state["elapsed"]
    with tqdm(total=total_steps, initial=state["step"], desc="train", unit="step", dynamic_ncols=True,
              disable=not main) as progress:
        for step in range(state["step"], stop_at):
            step_start = time.time()
            epoch, batches = plan[step]
            lr = learning_rate(step, total_steps, warmup_steps, cfg.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            n_trainable = sum(trainable[i] for batch in batches for i in batch)  # the window's, on every rank
            micro_batches = [collate([samples[i] for i in batch]) if batch else NOTHING_TRAINED
                             for batch in distributed.share(batches, pad=[])]  # ranks: this rank's share
            loss, _ = accumulate_gradients(model, micro_batches, device, autocast_dtype, n_trainable)
            loss = distributed.all_sum(loss)  # ranks: the window's loss is the sum of the shares
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            loss, grad_norm = loss.item(), grad_norm.item()
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                raise diverged(step + 1, loss, grad_norm, checkpoint)  # the checkpoint on disk stays as it is
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            tokens = sum(lengths[i] for batch in batches for i in batch)
            done = step + 1
            if main:
                append_jsonl(log_path, {"step": done, "epoch": epoch, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                                        "tokens": tokens, "trainable_tokens": n_trainable,
                                        "elapsed": round(time.time() - start, 3)})
            tokens_per_s = tokens / (time.time() - step_start)
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}", refresh=False)
            progress.update()
            periodic = cfg.save_every and done % cfg.save_every == 0 and done < total_steps
            if periodic or done == stop_at < total_steps:
                saved = {"step": done, "epoch": epoch, "elapsed": time.time() - start, "fingerprint": fingerprint,
                         "rng": distributed.all_gather(rng_state())}  # ranks: every rank's generators
                save_checkpoint(checkpoint, model, optimizer, saved, files)
    if stop_at < total_steps:
        print(f"stopped after step {stop_at} of {total_steps} (--stop-after); --resume continues from "
              f"{checkpoint}", file=sys.stderr)
        return None

    save_final(model, out, files)
    if main:
        summary = training_summary(plan, lengths, trainable, data_stats, time.time() - start, read_jsonl(log_path))
        write_json(out / SUMMARY, summary)  # written last: its presence marks the run finished
        shutil.rmtree(checkpoint, ignore_errors=True)  # the size of three models, and no longer needed
        print("train: " + ", ".join(f"{k} {v}" for k, v in summary.items()), file=sys.stderr)
    model.grad_ckpt = False
    return model.eval()


def resolve_defaults(cfg):
    """A copy of `cfg` with the automatic defaults filled in and contradictions refused."""
    device = cfg.device or default_device()
    lean = cfg.memory == "lean"
    if lean and cfg.dtype == "fp32":
        raise StepError("--memory lean keeps the weights in bf16; it cannot run with --dtype fp32")
    dtype = cfg.dtype or ("bf16" if lean or device.startswith("cuda") else "fp32")
    batch_tokens = cfg.batch_tokens or cfg.max_len
    if batch_tokens < cfg.max_len:
        raise StepError(f"--batch-tokens {batch_tokens} is below --max-len {cfg.max_len}: "
                        "a full-length sample would not fit in a micro-batch")
    return dataclasses.replace(cfg, device=device, dtype=dtype, batch_tokens=batch_tokens,
                               threads=cfg.threads or physical_cores())


def load_samples(cfg):
    """Token ids and labels of every trajectory in cfg.data, and what build_samples counted."""
    tokenizer = load_tokenizer(cfg.model, cfg.chat_format)
    trajectories = [t for path in cfg.data for t in load_trajectories(path, keep=marked_for_training)]
    unmarked = sum(not marked_for_training(r) for path in cfg.data for r in read_jsonl(path))
    if unmarked:
        print(f"train: {unmarked} episodes not marked for training (unsuccessful) left out", file=sys.stderr)
    return build_samples(tokenizer, trajectories, cfg.max_len, cfg.mask_errors, cfg.reflection,
                         cfg.reflection_placement)


def make_optimizer(model, cfg):
    """AdamW (LeanAdamW with memory "lean"); no weight decay on the norms' 1-D weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer_class = LeanAdamW if cfg.memory == "lean" else torch.optim.AdamW
    return optimizer_class(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def diverged(step, loss, grad_norm, checkpoint):
    kept = "no checkpoint was saved yet"
    if checkpoint.exists():
        last = torch.load(checkpoint / "training_state.pt", weights_only=True)["step"]
        kept = f"the last good checkpoint, step {last}, is kept in {checkpoint} (--resume continues from it)"
    return StepError(f"step {step}: the loss is {loss} (gradient norm {grad_norm}); training stopped. "
                     f"A lower --lr or a look at the data may help; {kept}.")


def training_summary(plan, lengths, trainable, data_stats, wall_time, log):
    """The run's totals; lengths and trainable: each sample's tokens and trainable tokens."""
    batches = [batch for _, window in plan for batch in window]
    tokens = sum(lengths[i] for batch in batches for i in batch)
    trained = sum(trainable[i] for batch in batches for i in batch)
    return {"steps": len(plan), "samples": len(lengths), "tokens": tokens, "trainable_tokens": trained,
            "trainable_fraction": round(trained / max(tokens, 1), 4),
            "padding_fraction": round(padding_fraction(batches, lengths), 4),
            "first_loss": log[0]["loss"] if log else None, "final_loss": log[-1]["loss"] if log else None,
            "wall_time_s": round(wall_time, 1), "data": data_stats}


# ----------------------------------------------------------------------------- output and checkpoints

# Copied from the model next to the trained weights, so that transformers and vLLM find the tokenizer.
MODEL_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "chat_template.jinja", "generation_config.json")
# Settings a resumed run must share with the interrupted one (the data itself is checked by digest).
RESUME_SETTINGS = ("epochs", "lr", "warmup", "weight_decay", "batch_tokens", "grad_accum", "max_len",
                   "mask_errors", "reflection", "reflection_placement", "seed", "memory", "dtype")


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


def run_fingerprint(cfg, samples, plan):
    digest = hashlib.sha256(json.dumps([samples, plan]).encode()).hexdigest()
    return {**{name: getattr(cfg, name) for name in RESUME_SETTINGS}, "data_digest": digest}


def save_checkpoint(path, model, optimizer, state, files):
    """The full training state, written beside `path` and swapped in only once complete: a crash
    leaves the previous checkpoint intact. The directory is also a model directory (load_model).
    Under torchrun every rank calls it, and rank 0 writes what was gathered whole from all of them."""
    model, optimizer_state = distributed.full_model(model), distributed.full_optimizer_state(optimizer)
    if not distributed.is_main():
        return
    tmp = path.with_name(f".{path.name}.tmp")
    save_model(model, tmp, files=files)
    torch.save(optimizer_state, tmp / "optimizer.pt")
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


def set_rng_state(states, seed):
    """This rank's generators from the saved ones of every rank. Resumed on another number of ranks,
    where the rounding noise cannot go on as it would have, each rank's are seeded afresh from the
    seed (as at the start)."""
    if len(states) != distributed.world_size():
        print(f"train: resumed on {distributed.world_size()} rank(s) after {len(states)}: lean's rounding noise "
              "starts afresh", file=sys.stderr)
        torch.manual_seed(seed + distributed.rank())
        return
    state = states[distributed.rank()]
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_final(model, out, files):
    """The trained model into out itself, beside the logs: save_model writes a complete directory
    (atomically), whose files are then moved in. Under torchrun rank 0 writes the gathered model."""
    model = distributed.full_model(model)
    if not distributed.is_main():
        return
    staging = out / ".final"
    save_model(model, staging, files=files)
    for file in staging.iterdir():
        os.replace(file, out / file.name)
    staging.rmdir()


def truncate_log(path, last_step):
    """Keep the log records up to `last_step`: steps after the checkpoint are trained again."""
    records = [r for r in read_jsonl(path) if r["step"] <= last_step] if path.exists() else []
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
