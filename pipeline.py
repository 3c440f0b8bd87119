"""STeP end to end, once per seed, and the results over all seeds (report.py).

    python step.py pipeline [--quick] [--seeds 3] [--out runs/NAME]

runs/NAME/golden.jsonl    the engine's expert on the train split: does not depend on the seed, shared
runs/NAME/seed-K/         what does: the D1/U2 split, the scratch model, stage 1 (base/), stage 2
                          (reflected.jsonl), stage 3 (one folder per variant), eval/VARIANT/SPLIT/
runs/NAME/results.json, results.md, results.png: every variant and split over all seeds and test
                          tasks, with 95 % intervals and paired comparisons

Every stage writes as it goes and is skipped once finished, so a rerun resumes where it stopped.
"""
import argparse
import contextlib
import copy
import json
import logging
import random
import time
from pathlib import Path

import torch

import envs
import report
import step
from data import load_trajectories, render_turn, write_atomic
from model import ModelArgs, Transformer, save_model, train_tokenizer
from oracle import oracle_verdict, serve_oracle_teacher
from teacher import teacher_prompt

log = logging.getLogger("step.pipeline")

# The built-in default: short SciWorld task families a tiny model can learn on a CPU
# (../shared/notes/default-run.md), a small LLaMA from scratch, the oracle teacher on loopback.
# Test tasks are drawn from each evaluation split (SciWorld: dev = seen and test = unseen).
PRESETS = {
    "quick": dict(task_types="find-non-living-thing,lifespan-longest-lived,lifespan-shortest-lived,"
                  "lifespan-longest-lived-then-shortest-lived",
                  train_tasks=160, test_tasks=40, stage1_epochs=20, stage3_epochs=6, seeds=1),
    "full": dict(task_types="find-non-living-thing,lifespan-longest-lived,lifespan-shortest-lived,"
                 "lifespan-longest-lived-then-shortest-lived,find-living-thing,find-plant",
                 train_tasks=360, test_tasks=120, stage1_epochs=20, stage3_epochs=10, seeds=3),
}
SCRATCH_MODEL = dict(dim=128, n_layers=2, n_heads=4, hidden_dim=352, tie_embeddings=True, max_seq_len=4096)
SCRATCH_VOCAB = 1024
VARIANTS = {  # name: (training data beside D1, mask errors, keep reflections, where a reflection goes)
    "golden-only": ("u2_golden.jsonl", True, True, "line"),
    "step": ("reflected.jsonl", True, True, "line"),
    "step-nomask": ("reflected.jsonl", False, True, "line"),
    "step-noreflection": ("reflected.jsonl", True, False, "line"),
    "step-reflection-in-thought": ("reflected.jsonl", True, True, "thought"),
    "step-undo": (report.UNDO_FILE, True, True, "line"),
}
# Stage 2's files: the --irreversible each is synthesized with (None: the pipeline's own). reflected.jsonl
# is always made; reflected-undo.jsonl, where wrong steps that cannot be undone were taken back and
# corrected, when a variant (step-undo) trains on it.
STAGE2 = {"reflected.jsonl": None, report.UNDO_FILE: "undo"}
DEFAULT_VARIANTS = ["golden-only", "step", "step-nomask"]
EVAL_SPLITS = {"sciworld": ["dev", "test"], "alfworld": ["valid_seen", "valid_unseen"], "webshop": ["test"]}


def stage(name):
    log.info("=" * 20 + " %s", name)


def seed_list(args):
    """--seeds N: the N seeds from --seed on; --seeds 0,3,7: those; absent: the preset's count."""
    preset = PRESETS["quick" if args.quick else "full"]
    text = str(args.seeds or preset["seeds"])
    if "," in text:
        return [int(s) for s in text.split(",")]
    return list(range(args.seed, args.seed + int(text)))


def seeds_option(text):
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count (3) or a list of seeds (0,1,2)") from None
    if len(seeds) == 1 and seeds[0] < 1 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive count or distinct seeds")
    return text


def without_thoughts(trajectory):
    """The golden trajectory in the earlier turn format, `Action: X` alone (issue 12's ablation of
    golden thoughts; the teacher's corrections keep theirs, as they did then)."""
    out = copy.deepcopy(trajectory)
    for m in out["messages"]:
        if m["role"] == "assistant":
            m.pop("thought", None)
            m["content"] = render_turn(m.get("action") or envs.parse_action(m["content"]))
    return out


def split_d1_u2(golden_file, run, seed, golden_thoughts=True):
    """U1/U2: about half of each task family's training tasks, chosen by seed (kept once written)."""
    d1_file, u2_file = run / "d1.jsonl", run / "u2_golden.jsonl"
    if not u2_file.exists():
        rng = random.Random(seed)
        families = {}
        golden = load_trajectories(golden_file)
        if not golden_thoughts:
            golden = [without_thoughts(t) for t in golden]
        for t in sorted(golden, key=lambda t: t["task"]):  # file order must not matter
            families.setdefault(envs.task_family(t["env"], t["task"]), []).append(t)
        for group in families.values():
            rng.shuffle(group)
        ordered = [t for group in families.values() for t in group]
        d1, u2 = ordered[0::2], ordered[1::2]  # alternating: each family halved, the totals too
        write_atomic(d1_file, "".join(json.dumps(t) + "\n" for t in d1))
        write_atomic(run / "u2_tasks.txt", "".join(t["task"] + "\n" for t in u2))
        write_atomic(u2_file, "".join(json.dumps(t) + "\n" for t in u2))  # last: marks the split done
    return load_trajectories(d1_file), load_trajectories(u2_file)


def tokenizer_texts(trajectories):
    """Text for a from-scratch tokenizer: the trajectories, and the oracle teacher's reflections on
    made-up mistakes (so reflections are not spelled out byte by byte later)."""
    texts = [m["content"] for t in trajectories for m in t["messages"]]
    for t in trajectories[:200]:
        actions = [envs.parse_action(m["content"]) for m in t["messages"] if m["role"] == "assistant"]
        for wrong, right in zip(actions[1:] + actions[:1], actions):
            rejected = envs.step_facts(before=([right], right), after=([right], right), info={"invalid": True},
                                       done=False, repeated=False)
            made_up = {"instruction": "", "task": t["messages"][1]["content"], "history": [],
                       "reply": f"Action: {wrong}", "thought": None, "action": wrong,
                       "observation": "No known action matches that input.", **rejected}
            verdict = oracle_verdict(teacher_prompt(made_up)[-1]["content"])
            if verdict["verdict"] == "wrong":
                texts.append(render_turn(verdict["action"], verdict["thought"], verdict["reflection"]))
    return texts


def scratch_model(run, trajectories, seed):
    """A small LLaMA from scratch and its tokenizer, saved like any Hugging Face checkpoint. The
    tokenizer sees the trajectories in task order, so it does not depend on how they were split."""
    path = run / "init"
    if (path / "config.json").exists():
        return path
    tmp = run / "init-tokenizer.model"
    tokenizer = train_tokenizer(tokenizer_texts(sorted(trajectories, key=lambda t: t["task"])), tmp, SCRATCH_VOCAB)
    torch.manual_seed(seed)
    model = Transformer(ModelArgs(vocab_size=tokenizer.vocab_size, **SCRATCH_MODEL))
    for p in model.parameters():  # GPT-2 style init: small weights train faster from scratch
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)
    (run / "tokenizer.model").write_bytes(tmp.read_bytes())
    save_model(model, path, files=[run / "tokenizer.model"])
    tmp.unlink()
    n = sum(p.numel() for p in model.parameters())
    log.info("scratch model: %.2fM parameters, vocabulary %d -> %s", n / 1e6, tokenizer.vocab_size, path)
    return path


@contextlib.contextmanager
def teacher_endpoint(args):
    """--teacher-url, or the oracle teacher (--oracle-*) served on loopback for the duration."""
    if args.teacher_url:
        yield args.teacher_url
        return
    server = serve_oracle_teacher("127.0.0.1", 0, rule=args.oracle_rule, reflection_style=args.oracle_reflection)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


# Stage 1 and 3 recipes: (lr, stage-1 epochs, stage-3 epochs, batch tokens, accumulation, checkpointing, dtype).
RECIPES = {
    # the built-in tiny model from scratch (epochs: the preset's)
    "scratch": (3e-3, None, None, 8192, 1, False, None),
    # a small pretrained student on a CPU (SmolLM2-135M): the notes' run by hand, ~8 trajectories a
    # step; bf16 autocast is 2.4x fp32 here, checkpointing costs 15-25 % and a 135M model does not need it
    "pretrained-cpu": (5e-5, 2, 1, 4096, 2, False, "bf16"),
    # ETO's recipe for a 7B on a GPU: 3 epochs, lr 2e-5, 4096 tokens x 16 micro-batches, checkpointing
    "pretrained-gpu": (2e-5, 3, 3, 4096, 16, True, None),
}


def recipe_name(args):
    """--recipe, or the one for this model and device: a small student's recipe is named for the CPU
    it was made on, and a GPU user training one (SmolLM2-135M) names it."""
    if args.recipe:
        return args.recipe
    return "scratch" if args.model is None else "pretrained-cpu" if args.device == "cpu" else "pretrained-gpu"


def training_settings(args, preset, stage_name, seed):
    """Stage 1 or 3 hyper-parameters from the recipe; --lr/--epochs/--batch-tokens override it."""
    recipe = recipe_name(args)
    lr, epochs1, epochs3, batch_tokens, grad_accum, grad_ckpt, dtype = RECIPES[recipe]
    epochs = {"stage1": epochs1 or preset["stage1_epochs"], "stage3": epochs3 or preset["stage3_epochs"]}[stage_name]
    return dict(lr=args.lr or lr, epochs=args.epochs or epochs, batch_tokens=args.batch_tokens or batch_tokens,
                grad_accum=grad_accum, max_len=4096, warmup=0.03, seed=seed, device=args.device, dtype=dtype,
                threads=args.threads, grad_ckpt=grad_ckpt, save_every=0 if recipe == "scratch" else 50)


TEACHER_OPTIONS = ("teacher_url", "teacher_model", "teacher_reference", "teacher_timeout", "golden", "max_corrections",
                   "teacher_max_prompt_tokens", "teacher_max_answer_tokens", "teacher_response_format",
                   "teacher_max_failures", "teacher_max_outage", "irreversible")


def teacher_options(args, **overrides):
    """The pipeline's --teacher-* options (and the rest of add_teacher_options), for synthesize."""
    return {**{name: getattr(args, name) for name in TEACHER_OPTIONS}, **overrides}


def agent_dtype(args):
    """A pretrained student plays in bf16 (it trained under bf16 autocast; on a CPU with AVX-512 BF16 it
    decodes about twice as fast); the scratch model in fp32 on a CPU, its training precision."""
    return "bf16" if args.model else None


def run_seed(args, run, seed, preset, common):
    """Stages 2-6 for one seed, in run/seed-K/."""
    seed_dir = run / f"seed-{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    d1, u2 = split_d1_u2(Path(args.golden) if args.golden else run / "golden.jsonl", seed_dir, seed,
                         golden_thoughts=args.golden_thoughts == "oracle")
    log.info("seed %d: D1 %d golden trajectories, U2 %d tasks", seed, len(d1), len(u2))

    stage(f"seed {seed}: the model")
    model_dir = Path(args.model) if args.model else scratch_model(seed_dir, d1 + u2, seed)

    stage(f"seed {seed}: stage 1: SFT on D1 -> the base agent")
    step.train(step.command_args("train", model=model_dir, data=[seed_dir / "d1.jsonl"], out=seed_dir / "base",
                                 **training_settings(args, preset, "stage1", seed)))

    stage(f"seed {seed}: stage 2: self-reflected trajectories on U2, teacher watching every step")
    stage2_files = ["reflected.jsonl"] + [VARIANTS[name][0] for name in args.variants]
    with teacher_endpoint(args) as url:
        for name in dict.fromkeys(f for f in stage2_files if f in STAGE2):
            step.synthesize(step.command_args(
                "synthesize", model=seed_dir / "base", split="train", task_file=seed_dir / "u2_tasks.txt",
                out=seed_dir / name, max_invalid=args.max_invalid, dtype=agent_dtype(args),
                sciworld_expert=args.sciworld_expert,
                **teacher_options(args, teacher_url=url, irreversible=STAGE2[name] or args.irreversible), **common))

    stage(f"seed {seed}: stage 3: STeP and the baselines, same seed and budget")
    start_from = seed_dir / "base" if args.stage3_from == "base-agent" else model_dir
    for name in args.variants:
        extra, mask_errors, reflection, placement = VARIANTS[name]
        step.train(step.command_args("train", model=start_from, data=[seed_dir / "d1.jsonl", seed_dir / extra],
                                     out=seed_dir / name, mask_errors=mask_errors, reflection=reflection,
                                     reflection_placement=placement,
                                     **training_settings(args, preset, "stage3", seed)))

    stage(f"seed {seed}: evaluation on held-out tasks")
    for name in ["base", *args.variants]:
        for split in EVAL_SPLITS[args.env]:
            step.evaluate(step.command_args(
                "eval", model=seed_dir / name, split=split,
                tasks=args.test_tasks or (None if args.eval_set else preset["test_tasks"]),
                eval_set=args.eval_set, out=report.eval_dir(seed_dir, name, split), max_invalid=args.max_invalid,
                dtype=agent_dtype(args), **common))


def pipeline(args):
    """STeP end to end: golden data, then per seed stage 1 (SFT on D1), stage 2 (self-reflected
    trajectories on U2), stage 3 (STeP and the baselines) and the evaluation on held-out tasks of
    every split; then the results over all seeds with intervals and paired comparisons."""
    preset = PRESETS["quick" if args.quick else "full"]
    run = Path(args.out or ("runs/quick" if args.quick else "runs/default"))
    run.mkdir(parents=True, exist_ok=True)
    seeds = seed_list(args)
    task_types = args.task_types or (preset["task_types"] if args.env == "sciworld" else None)
    common = dict(env=args.env, task_types=task_types, device=args.device, parallel=args.parallel,
                  max_steps=args.max_steps, threads=args.threads)
    start = time.time()
    if args.teacher_url:  # a teacher that is down fails now, not after stage 1's training
        step.teacher_client(step.command_args("synthesize", model="-", out="-", parallel=args.parallel,
                                              **teacher_options(args)))

    stage("golden trajectories (the engine's expert, train split), shared by every seed")
    if not args.golden:
        step.golden(step.command_args("golden", split="train", tasks=args.train_tasks or preset["train_tasks"],
                                      out=run / "golden.jsonl", **common))
    for seed in seeds:
        run_seed(args, run, seed, preset, common)

    stage("results over all seeds")
    results = report.report_seeds(run, {seed: run / f"seed-{seed}" for seed in seeds}, settings={
        "env": args.env, "quick": args.quick, "seeds": seeds, "variants": ["base", *args.variants],
        "splits": EVAL_SPLITS[args.env], "eval_set": args.eval_set, "model": str(args.model or "scratch")})
    print("\n" + report.markdown_table(results))
    log.info("pipeline: %.1f minutes", (time.time() - start) / 60)
    return results


def add_pipeline_command(commands, add_teacher_options):
    p = commands.add_parser("pipeline", help="the whole method end to end", description=pipeline.__doc__)
    p.add_argument("--quick", action="store_true", help="the small default: about 15 minutes on 2 CPU cores")
    p.add_argument("--out", default=None, help="run directory (default runs/quick or runs/default)")
    p.add_argument("--env", default="sciworld", choices=sorted(envs.ENVS))
    p.add_argument("--task-types", default=None, help="task families (default: the preset's short SciWorld tasks)")
    p.add_argument("--model", default=None, help="start from this checkpoint (e.g. LLaMA-2-7B-Chat) instead of a scratch model")
    add_teacher_options(p, required=False)
    step.add_oracle_options(p)
    step.add_sciworld_expert_option(p)
    p.add_argument("--golden-thoughts", choices=["oracle", "none"], default="oracle",
                   help="golden turns as `Thought: ...\nAction: ...` (the oracle's scripted thoughts), or "
                        "`Action: ...` alone, the earlier format [%(default)s]")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                   help="stage 3 variants to train and evaluate beside the base agent")
    p.add_argument("--stage3-from", choices=["base-agent", "model"], default="base-agent",
                   help="stage 3 continues the base agent (cheap), or starts from --model as in the paper")
    p.add_argument("--train-tasks", type=step.positive_int, default=None,
                   help="training tasks (D1 + U2); default: the preset's")
    p.add_argument("--test-tasks", type=step.positive_int, default=None,
                   help="held-out evaluation tasks per split; default: the preset's (all of the set with --eval-set)")
    p.add_argument("--eval-set", choices=sorted(step.EVAL_SETS), default=None,
                   help="evaluate on a published list of tasks (eto: ETO's, as the literature reports)")
    p.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help="stage 1 and 3 hyper-parameters (pipeline.RECIPES); default: scratch without --model, "
                        "else pretrained-cpu on a CPU and pretrained-gpu (ETO's, for a 7B) on a GPU")
    p.add_argument("--epochs", type=step.positive_int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-tokens", type=step.positive_int, default=None)
    p.add_argument("--parallel", type=step.positive_int, default=8)
    p.add_argument("--max-invalid", type=step.positive_int, default=5)
    p.add_argument("--max-steps", type=step.positive_int, default=None, help="episode limit (default: the environment's)")
    p.add_argument("--seed", type=int, default=0, help="the first seed [%(default)s]")
    p.add_argument("--seeds", type=seeds_option, default=None,
                   help="a count N (seeds --seed .. --seed+N-1) or a list 0,3,7 [quick: 1, full: 3]")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=step.positive_int, default=None, help="CPU threads; default: physical cores")
    p.set_defaults(run=pipeline)
    return p
