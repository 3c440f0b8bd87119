"""The method's stages as functions, and STeP end to end, once per seed, with the results over all
seeds (report.py).

    golden(AgentConfig(split="train", tasks=160), "golden.jsonl")     # the engine's expert, with thoughts
    synthesize(AgentConfig(model="base", split="train"), TeacherConfig(url=URL), "reflected.jsonl")
    evaluate(AgentConfig(model="step", split="test"), "eval/step/test")
    run_pipeline(PipelineConfig(quick=True))                           # all of it

A pipeline's run directory:
runs/NAME/golden.jsonl    the engine's expert on the train split: does not depend on the seed, shared
runs/NAME/seed-K/         what does: the D1/U2 split, the scratch model, stage 1 (base/), stage 2
                          (reflected.jsonl), stage 3 (one folder per variant), eval/VARIANT/SPLIT/
runs/NAME/results.json, results.md, results.png: every variant and split over all seeds and test
                          tasks, with 95 % intervals and paired comparisons
runs/NAME/site/           all of it to read in a browser (show.py): open site/index.html

Every stage writes as it goes and is skipped once finished, so a rerun resumes where it stopped.
"""
import contextlib
import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import distributed
import envs
import report
import show
from data import StepError, append_jsonl, load_trajectories, parse_action, render_turn, write_atomic, write_json
from envs import AgentStep
from model import ModelArgs, Transformer, default_device, native_bf16, save_model, train_tokenizer
from oracle import annotate_golden, oracle_verdict, serve_oracle_teacher
from rollout import AgentConfig, finished_ids, golden_trajectory, run_agent, serve_student
from teacher import TeacherConfig, TeacherUnavailable, connect, teacher_prompt
from train import TrainConfig, train

log = logging.getLogger("step.pipeline")


# ----------------------------------------------------------------------------- the stages

def golden(cfg: AgentConfig, out):
    """Golden trajectories from the engine's expert, verified by the engine, appended as they come;
    every turn has a thought: the expert's own (ALFWorld's searching expert), else one from the
    oracle's scripted annotator (oracle.annotate_golden)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    listed = cfg.listed()
    env = cfg.new_env(listed)
    done = finished_ids(out)
    todo = [t for t in cfg.select_tasks(env, listed) if t not in done]
    failures = 0
    for task_id in tqdm(todo, desc=f"golden {cfg.env}/{cfg.split}", unit="task"):
        try:
            append_jsonl(out, annotate_golden(golden_trajectory(env, task_id)))
        except Exception as error:  # one bad task or a crashed engine must not end the run
            failures += 1
            log.warning("golden %s failed: %s", task_id, error)
            env.close()
            env = cfg.new_env(listed)
    env.close()
    log.info("golden: %d written, %d already there, %d failed -> %s", len(todo) - failures, len(done), failures, out)


def evaluate(cfg: AgentConfig, out):
    """Greedy evaluation: one JSON line per episode in out/episodes.jsonl, then summary.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    already, start = len(finished_ids(out / "episodes.jsonl")), time.time()
    episodes = run_agent(cfg, out / "episodes.jsonl")
    summary = envs.summarize(episodes)
    if not distributed.is_main():  # under torchrun rank 0 writes the summary of every rank's episodes
        return summary
    if len(episodes) > already:  # the speed goes to the log, not the files: those do not depend on the machine
        played, minutes = len(episodes) - already, (time.time() - start) / 60
        log.info("eval %s: %d episodes in %.1f min, %.1f episodes/min", out, played, minutes, played / minutes)
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return summary


def synthesize(cfg: AgentConfig, teacher: TeacherConfig, out, golden_file=None, max_corrections=5,
               irreversible="end"):
    """Stage 2: the student acts, the teacher judges every step over HTTP and corrects wrong ones;
    every episode is written, the successful ones marked "train": true. golden_file: the tasks'
    golden trajectories, the teacher's reference with teacher.reference "golden". irreversible: a
    wrong step that cannot be undone ends the episode ("end") or is taken back and corrected ("undo").
    A teacher that does not answer stops the run: episodes are written only once every step the
    teacher was asked about got an answer, so a rerun plays the others once the teacher is back."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    goldens = golden_references(teacher.reference, golden_file)
    client = connect_teacher(teacher, cfg.parallel)

    def judge(step):
        return client.judge(step, reference=teacher.reference, golden=goldens.get(step.task_id))
    try:
        episodes = run_agent(cfg, out, judge, max_corrections, undo_irreversible=irreversible == "undo",
                             mark=lambda t: {**t, "train": t["success"]})
    except TeacherUnavailable as e:
        raise StepError(f"{e}. The finished episodes are in {out}; those in flight were not written: run the "
                        f"same command again once the teacher is back, and it plays them") from None
    summary = synthesis_summary(episodes, client)  # under torchrun: the teacher's figures are this rank's
    if distributed.is_main():
        print(json.dumps(summary, indent=2))
    return summary


def golden_references(reference, golden_file):
    """{task id: golden messages} when the teacher is shown golden trajectories, else {}."""
    if reference != "golden":
        return {}
    if not golden_file:
        raise StepError("--teacher-reference golden needs --golden FILE with the tasks' golden trajectories")
    return {t["task"]: t["messages"] for t in load_trajectories(golden_file)}


def connect_teacher(teacher: TeacherConfig, max_in_flight):
    """The teacher's client, asked one test request before any episode: a StepError naming the URL
    and what came back when it does not answer."""
    try:
        return connect(teacher, max_in_flight)
    except TeacherUnavailable as e:
        raise StepError(str(e)) from None


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


# ----------------------------------------------------------------------------- presets and recipes

# The built-in default: short SciWorld task families a tiny model can learn on a CPU, a small LLaMA
# from scratch, the oracle teacher on loopback. Test tasks are drawn from each evaluation split
# (SciWorld: dev = seen and test = unseen).
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
# Stage 2's files: the irreversible setting each is synthesized with (None: the pipeline's own).
# reflected.jsonl is always made; reflected-undo.jsonl, where wrong steps that cannot be undone were
# taken back and corrected, when a variant (step-undo) trains on it.
STAGE2 = {"reflected.jsonl": None, report.UNDO_FILE: "undo"}
DEFAULT_VARIANTS = ["golden-only", "step", "step-nomask"]
EVAL_SPLITS = {"sciworld": ["dev", "test"], "alfworld": ["valid_seen", "valid_unseen"], "webshop": ["test"]}

# Stage 1 and 3 recipes: (lr, stage-1 epochs, stage-3 epochs, batch tokens, accumulation, checkpointing, dtype).
RECIPES = {
    # the built-in tiny model from scratch (epochs: the preset's)
    "scratch": (3e-3, None, None, 8192, 1, False, None),
    # a small pretrained student on a CPU (SmolLM2-135M): ~8 trajectories a step; bf16 autocast is
    # 2.4x fp32 on a CPU with AVX-512 BF16, and fp32 is used where bf16 is emulated (model.native_bf16);
    # checkpointing costs 15-25 % and a 135M model does not need it
    "pretrained-cpu": (5e-5, 2, 1, 4096, 2, False, "bf16"),
    # ETO's recipe for a 7B on a GPU: 3 epochs, lr 2e-5, 4096 tokens x 16 micro-batches, checkpointing
    "pretrained-gpu": (2e-5, 3, 3, 4096, 16, True, None),
}


@dataclass
class PipelineConfig:
    """`step.py pipeline`'s options."""
    quick: bool = False  # the small default: about 15 minutes on 2 CPU cores
    out: str | None = None  # run directory [runs/quick or runs/default]
    env: str = "sciworld"
    task_types: str | None = None  # task families [the preset's short SciWorld tasks]
    model: str | None = None  # start from this checkpoint instead of a scratch model
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # url None: the oracle on loopback
    golden: str | None = None  # golden trajectories to use as D1/U2 instead of the engine's expert
    expert: str | None = None  # ALFWorld's expert: "search" or "planner" [envs.AlfWorldEnv's]
    max_corrections: int = 5
    irreversible: str = "end"  # "end" or "undo" (see synthesize)
    variants: list = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    stage3_from: str = "base-agent"  # stage 3 continues the base agent, or starts from "model" as in the paper
    train_tasks: int | None = None  # D1 + U2 [the preset's]
    test_tasks: int | None = None  # per evaluation split [the preset's; all of the set with eval_set]
    eval_set: str | None = None  # a published list of evaluation tasks (envs.EVAL_SETS)
    recipe: str | None = None  # RECIPES [scratch without model; else pretrained-cpu on a CPU, pretrained-gpu]
    epochs: int | None = None  # stages 1 and 3 [the recipe's]
    stage1_epochs: int | None = None  # stage 1 alone, where the base agent needs more than stage 3 [epochs]
    lr: float | None = None
    batch_tokens: int | None = None
    parallel: int = 8
    max_invalid: int | None = 5
    max_steps: int | None = None
    seed: int = 0  # the first seed
    seeds: str | None = None  # a count N (seed .. seed+N-1) or a list "0,3,7" [the preset's]
    device: str = field(default_factory=default_device)
    threads: int | None = None
    # a command serving a checkpoint over OpenAI-compatible HTTP, started for each agent with "--model DIR
    # --port P" appended and stopped after it (e.g. vLLM's api_server); None: the agent decodes in-process
    student_server: str | None = None
    nproc: int = 1  # processes (GPUs) for training (FSDP2), stage 2 and evaluation, started as torchrun does


def seed_list(cfg):
    """seeds "N": the N seeds from cfg.seed on; "0,3,7": those; None: the preset's count."""
    preset = PRESETS["quick" if cfg.quick else "full"]
    text = str(cfg.seeds or preset["seeds"])
    if "," in text:
        return [int(s) for s in text.split(",")]
    return list(range(cfg.seed, cfg.seed + int(text)))


def recipe_name(cfg):
    """cfg.recipe, or the one for this model and device: a small student's recipe is named for the
    CPU it was made on, and a GPU user training one (SmolLM2-135M) names it."""
    if cfg.recipe:
        return cfg.recipe
    return "scratch" if cfg.model is None else "pretrained-cpu" if cfg.device == "cpu" else "pretrained-gpu"


def training_settings(cfg, preset, stage_name, seed):
    """Stage 1 or 3 hyper-parameters from the recipe; cfg.lr/epochs/stage1_epochs/batch_tokens override it."""
    recipe = recipe_name(cfg)
    lr, epochs1, epochs3, batch_tokens, grad_accum, grad_ckpt, dtype = RECIPES[recipe]
    if dtype == "bf16" and not native_bf16(cfg.device):
        dtype = "fp32"
    epochs = {"stage1": cfg.stage1_epochs or cfg.epochs or epochs1 or preset["stage1_epochs"],
              "stage3": cfg.epochs or epochs3 or preset["stage3_epochs"]}[stage_name]
    return dict(lr=cfg.lr or lr, epochs=epochs, batch_tokens=cfg.batch_tokens or batch_tokens,
                grad_accum=grad_accum, max_len=4096, warmup=0.03, seed=seed, device=cfg.device, dtype=dtype,
                threads=cfg.threads, grad_ckpt=grad_ckpt, save_every=0 if recipe == "scratch" else 50)


def agent_dtype(cfg):
    """A pretrained student plays in bf16 where bf16 is native (it trained under bf16 autocast; on a CPU
    with AVX-512 BF16 it decodes about twice as fast), else in fp32; the scratch model in fp32 on a CPU,
    its training precision."""
    return "bf16" if cfg.model and native_bf16(cfg.device) else None


# ----------------------------------------------------------------------------- D1/U2 and the scratch model

def split_d1_u2(golden_file, run, seed):
    """U1/U2: about half of each task family's training tasks, chosen by seed (kept once written)."""
    d1_file, u2_file = run / "d1.jsonl", run / "u2_golden.jsonl"
    if not u2_file.exists():
        rng = random.Random(seed)
        families = {}
        for t in sorted(load_trajectories(golden_file), key=lambda t: t["task"]):  # file order must not matter
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
        actions = [parse_action(m["content"]) for m in t["messages"] if m["role"] == "assistant"]
        for wrong, right in zip(actions[1:] + actions[:1], actions):
            rejected = envs.step_facts(before=([right], right, None), after=([right], right, None),
                                       info={"invalid": True}, done=False, repeated=False)
            made_up = AgentStep(env=t["env"], split=t["split"], task_id=t["task"], instruction="",
                                task=t["messages"][1]["content"], history=[], reply=f"Action: {wrong}",
                                thought=None, action=wrong, observation="No known action matches that input.",
                                facts=rejected)
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
def teacher_endpoint(teacher: TeacherConfig):
    """teacher.url, or the oracle teacher served on loopback for the duration."""
    if teacher.url:
        yield teacher.url
        return
    server = serve_oracle_teacher("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@contextlib.contextmanager
def student_endpoint(cfg, model_dir, log_path, finished):
    """The URL of cfg.student_server serving model_dir for one stage (rollout.serve_student), or None:
    the agent decodes in-process, as it does when the stage has nothing left to play."""
    if not cfg.student_server or finished:
        yield None
        return
    with serve_student(cfg.student_server, model_dir, log_path) as url:
        yield url


# ----------------------------------------------------------------------------- end to end

def run_on_ranks(nproc, fn, *args, **kwargs):
    """fn(*args, **kwargs) in this process, or on nproc processes started as torchrun starts them (distributed.py)."""
    if nproc == 1:
        fn(*args, **kwargs)
    else:
        distributed.run_on_ranks(nproc, fn, *args, **kwargs)


def stage(name):
    log.info("=" * 20 + " %s", name)


def run_seed(cfg, run, seed, preset, common):
    """Stages 1-3 and the evaluation for one seed, in run/seed-K/."""
    seed_dir = run / f"seed-{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    d1, u2 = split_d1_u2(Path(cfg.golden) if cfg.golden else run / "golden.jsonl", seed_dir, seed)
    log.info("seed %d: D1 %d golden trajectories, U2 %d tasks", seed, len(d1), len(u2))

    stage(f"seed {seed}: the model")
    model_dir = Path(cfg.model) if cfg.model else scratch_model(seed_dir, d1 + u2, seed)

    stage(f"seed {seed}: stage 1: SFT on D1 -> the base agent")
    run_on_ranks(cfg.nproc, train, TrainConfig(model=model_dir, data=[seed_dir / "d1.jsonl"], out=seed_dir / "base",
                                               **training_settings(cfg, preset, "stage1", seed)))

    stage(f"seed {seed}: stage 2: self-reflected trajectories on U2, teacher watching every step")
    stage2_files = ["reflected.jsonl"] + [VARIANTS[name][0] for name in cfg.variants]
    with teacher_endpoint(cfg.teacher) as url:
        for name in dict.fromkeys(f for f in stage2_files if f in STAGE2):
            done = {t["task"] for t in u2} <= finished_ids(seed_dir / name)
            with student_endpoint(cfg, seed_dir / "base", seed_dir / f"{name}.student-server.log", done) as student:
                run_on_ranks(cfg.nproc, synthesize,
                             AgentConfig(model=seed_dir / "base", split="train", task_file=seed_dir / "u2_tasks.txt",
                                         max_invalid=cfg.max_invalid, dtype=agent_dtype(cfg), student_url=student,
                                         **common),
                             dataclasses.replace(cfg.teacher, url=url), seed_dir / name, golden_file=cfg.golden,
                             max_corrections=cfg.max_corrections, irreversible=STAGE2[name] or cfg.irreversible)

    stage(f"seed {seed}: stage 3: STeP and the baselines, same seed and budget")
    start_from = seed_dir / "base" if cfg.stage3_from == "base-agent" else model_dir
    for name in cfg.variants:
        extra, mask_errors, reflection, placement = VARIANTS[name]
        run_on_ranks(cfg.nproc, train, TrainConfig(
            model=start_from, data=[seed_dir / "d1.jsonl", seed_dir / extra], out=seed_dir / name,
            mask_errors=mask_errors, reflection=reflection, reflection_placement=placement,
            **training_settings(cfg, preset, "stage3", seed)))

    stage(f"seed {seed}: evaluation on held-out tasks")
    for name in ["base", *cfg.variants]:
        for split in EVAL_SPLITS[cfg.env]:
            out = report.eval_dir(seed_dir, name, split)
            with student_endpoint(cfg, seed_dir / name, seed_dir / f"eval-{name}-{split}.student-server.log",
                                  (out / "summary.json").exists()) as student:
                run_on_ranks(cfg.nproc, evaluate, AgentConfig(
                    model=seed_dir / name, split=split,
                    tasks=cfg.test_tasks or (None if cfg.eval_set else preset["test_tasks"]), eval_set=cfg.eval_set,
                    max_invalid=cfg.max_invalid, dtype=agent_dtype(cfg), student_url=student, **common), out)


def run_pipeline(cfg: PipelineConfig):
    """STeP end to end: golden data, then per seed stage 1 (SFT on D1), stage 2 (self-reflected
    trajectories on U2), stage 3 (STeP and the baselines) and the evaluation on held-out tasks of
    every split; then the results over all seeds with intervals and paired comparisons."""
    preset = PRESETS["quick" if cfg.quick else "full"]
    run = Path(cfg.out or ("runs/quick" if cfg.quick else "runs/default"))
    run.mkdir(parents=True, exist_ok=True)
    seeds = seed_list(cfg)
    task_types = cfg.task_types or (preset["task_types"] if cfg.env == "sciworld" else None)
    common = dict(env=cfg.env, task_types=task_types, device=cfg.device, parallel=cfg.parallel,
                  max_steps=cfg.max_steps, threads=cfg.threads, expert=cfg.expert)
    start = time.time()
    if cfg.nproc > 1 and cfg.student_server:
        raise StepError("--student-server serves the agent in one server; --nproc plays it in-process on N ranks: "
                        "choose one")
    if cfg.teacher.url:  # a teacher that is down fails now, not after stage 1's training
        connect_teacher(cfg.teacher, cfg.parallel)

    stage("golden trajectories (the engine's expert, train split), shared by every seed")
    if not cfg.golden:
        golden(AgentConfig(split="train", tasks=cfg.train_tasks or preset["train_tasks"], **common),
               run / "golden.jsonl")
    for seed in seeds:
        run_seed(cfg, run, seed, preset, common)

    stage("results over all seeds")
    results = report.report_seeds(run, {seed: run / f"seed-{seed}" for seed in seeds}, settings={
        "env": cfg.env, "quick": cfg.quick, "seeds": seeds, "variants": ["base", *cfg.variants],
        "splits": EVAL_SPLITS[cfg.env], "eval_set": cfg.eval_set, "model": str(cfg.model or "scratch")})
    print("\n" + report.markdown_table(results))
    show.write_site(run, run / "site")
    log.info("pipeline: %.1f minutes; the records to read in a browser: %s", (time.time() - start) / 60,
             run / "site" / "index.html")
    return results
