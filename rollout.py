"""Stage 2's heart and every rollout: the agent plays episodes, a teacher watching each step.

    policy = make_policy(*load_agent("runs/quick/seed-0/base", "cpu"), max_new_tokens=128)
    trajectories = run_episodes(policy, lambda: make_env("sciworld", "train"), task_ids, judge=teacher_judge)

Each turn the policy answers for every live episode at once (one batched greedy generate, each
episode's KV cache kept across its turns); the envs take the actions; the judge (teacher.py's client,
or none in evaluation) is shown each step as an AgentStep and returns a Verdict. A step judged wrong
stays in the trajectory with "loss": false (partial masking: apply_verdict is the one place that
decides it), and the correction, "Reflection: ...\nThought: ...\nAction: ...", is executed and
recorded after it (correct). A wrong step that cannot be undone ends the episode, or is taken back
in the env first (undo). golden_trajectory replays the expert; run_agent adds a model, the task
list and a resumable output file around run_episodes.
"""
import contextlib
import functools
import glob
import json
import logging
import os
import shlex
import socket
import subprocess
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
import torch
from tqdm import tqdm

import distributed
import envs
from data import (append_jsonl, encode_prompt, end_of_turn_id, parse_action, parse_thought, read_jsonl,
                  render_turn, write_atomic)
from envs import AgentStep, expert_view, norm_action, step_facts
from model import CachedDecoder, default_device, load_model, load_tokenizer, physical_cores

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    """An agent and the tasks it plays: the options of `step.py eval` and `synthesize` (`golden`
    uses the task options only: its agent is the engine's expert)."""
    env: str = "sciworld"
    split: str = "test"  # train, dev/seen or test/unseen (ALFWorld: valid_seen, valid_unseen...)
    model: str | os.PathLike | None = None  # a Hugging Face LLaMA directory with its tokenizer
    chat_format: str | None = None  # None: the checkpoint's
    dtype: str | None = None  # "fp32" or "bf16" [fp32 on a CPU, bf16 on CUDA]
    tasks: int | None = None  # the first N tasks, round-robin over task families
    task_file: str | os.PathLike | None = None  # task ids, one a line (instead of tasks)
    task_types: str | None = None  # comma-separated SciWorld task families to draw from
    eval_set: str | None = None  # a published list of the split's tasks (envs.EVAL_SETS)
    parallel: int = 8  # episodes at once (one batched generate per step)
    max_invalid: int | None = None  # end an episode after this many invalid actions in a row
    max_new_tokens: int = 128  # reply length limit per turn
    max_steps: int | None = None  # episode limit [the environment's]
    device: str | None = None  # [cuda if available, else cpu]
    threads: int | None = None  # CPU threads for the model [physical cores]
    student_url: str | None = None  # the model served at this OpenAI-compatible URL (e.g. vLLM) instead of in-process
    expert: str | None = None  # ALFWorld's expert: "search" or "planner" [envs.AlfWorldEnv's]

    def env_options(self, listed=None):
        """make_env's options: task_types narrows the task families (SciWorld; a task list asks for
        exactly the families it names), max_steps overrides the episode limit, expert picks ALFWorld's."""
        options = {"tasks": self.task_types.split(",")} if self.task_types else {}
        if listed and self.env == "sciworld":
            options["tasks"] = sorted({envs.task_family(self.env, t) for t in listed})
        if self.expert:
            if self.env != "alfworld":
                raise ValueError(f"--expert picks ALFWorld's expert; {self.env} has one expert")
            options["expert"] = self.expert
        return {**options, "max_steps": self.max_steps} if self.max_steps else options

    def listed(self):
        """The task ids that task_file or eval_set name, in their order; None when neither is given."""
        return envs.listed_tasks(self.env, self.split, self.task_file, self.eval_set)

    def new_env(self, listed=None):
        return envs.make_env(self.env, self.split, **self.env_options(listed))

    def select_tasks(self, env, listed):
        """The tasks to play: the first `tasks` of the listed ones or of env's split, round-robin over families."""
        return envs.select_tasks(self.env, env.task_ids(), self.tasks, listed)


# ----------------------------------------------------------------------------- episodes

INVALID_FORMAT = ("Invalid format: your reply has no action. Reply with \"Thought: <your reasoning>\" "
                  "and then \"Action: <one action>\".")
GOLDEN_MAX_STEPS = 1000  # gold paths are at most ~200 actions: more means the expert is lost


def message(role, content, loss=False, **fields):
    return {"role": role, "content": content, "loss": loss, **fields}


class Episode:
    """One episode: its messages so far, the statistics of its trajectory, and why it ended."""

    def __init__(self, env, task_id, max_invalid=None, max_steps=None, undo_irreversible=False):
        self.env, self.task_id, self.max_invalid = env, task_id, max_invalid
        # A wrong step that cannot be undone: taken back in the env and corrected (True), or the end
        # of the episode (False). self.undoable: the last step is one the run would take back.
        self.undo_irreversible, self.undoable = undo_irreversible, False
        self.id = f"{env.name}/{env.split}/{task_id}"
        self.max_steps = max_steps
        self.task, self.messages = "", [message("system", env.instruction)]
        self.steps = self.invalid_run = self.invalid = self.corrections = self.errors = 0
        self.unjudged = self.teacher_calls = self.taken_back = 0
        self.teacher_latency_s = self.best = self.best_before = 0.0
        self.won, self.end_reason = False, None
        self.since_progress = set()  # (action, observation) of the judged steps since the last progress

    def begin(self):
        self.task = self.env.reset(self.task_id)
        self.max_steps = self.max_steps or self.env.max_steps  # per task in SciWorld: read after reset
        self.messages.append(message("user", self.task))

    def execute(self, content, action, fields=None):
        """Records an assistant turn, executes its action (a turn without one is an invalid step),
        records the observation and decides whether the episode is over."""
        if action is None:
            observation, reward, done, info = INVALID_FORMAT, 0.0, False, {"score": 0.0, "won": False, "invalid": True}
        else:
            observation, reward, done, info = self.env.step(action)
        self.messages += [message("assistant", content, loss=True, **(fields or {})), message("user", observation)]
        self.steps += 1
        self.best_before = self.best
        self.best, self.won = max(self.best, info["score"]), self.won or info["won"]
        self.invalid += info["invalid"]
        self.invalid_run = self.invalid_run + 1 if info["invalid"] else 0
        if done:
            self.end_reason = "done"
        elif self.max_invalid and self.invalid_run >= self.max_invalid:
            self.end_reason = "invalid_actions"
        elif self.steps >= self.max_steps:
            self.end_reason = "max_steps"
        return observation, reward, done, info

    def take_back(self):
        """Takes the last step back in the env: it stays in the messages (judged wrong), and the episode
        goes on from the state before it."""
        self.env.undo()
        self.messages[-2]["taken_back"] = True  # the wrong turn; [-1] is its observation
        self.best, self.won, self.undoable = self.best_before, False, False
        self.taken_back += 1
        self.end_reason = None

    def trajectory(self, source):
        messages = self.messages[:-1] if self.steps else self.messages  # the last observation teaches nothing
        return {"id": self.id, "env": self.env.name, "split": self.env.split, "task": self.task_id,
                "source": source, "messages": messages, "reward": self.best, "success": self.won,
                "steps": self.steps, "end_reason": self.end_reason, "errors": self.errors,
                "corrections": self.corrections, "taken_back": self.taken_back, "invalid_actions": self.invalid,
                "unjudged": self.unjudged, "teacher_calls": self.teacher_calls, "teacher_latency_s": round(self.teacher_latency_s, 3)}


# The facts of a judged step kept in its record (beside its turn), for whoever reads the records later.
RECORDED_FACTS = ("rejected", "repeated", "irreversible", "plan_before", "plan_after", "expert_before", "expert_after")


def agent_step(episode, reply, judged):
    """Executes the agent's reply; returns what the judge is shown (an AgentStep), or None when
    nobody judges it: no judge, the step ended the episode by winning or running out of steps, or
    the engine asked which thing it meant (the answer is judged). A step that cannot be undone is
    judged, and ends the episode, unless the episode takes such steps back when they are judged
    wrong (undo_if_wrong: the teacher is told so)."""
    history, action, env = list(episode.messages), parse_action(reply), episode.env
    before = expert_view(env) if judged else None
    observation, reward, done, info = episode.execute(reply, action)
    failed = done and not info["won"]
    if not judged or episode.end_reason and not failed or info.get("question"):
        return None
    done_before = (norm_action(action), observation) if action is not None else None
    facts = step_facts(before, expert_view(env), info, done, done_before in episode.since_progress)
    if None not in (facts.plan_before, facts.plan_after) and facts.plan_after < facts.plan_before:
        episode.since_progress.clear()
    episode.since_progress.add(done_before)
    episode.messages[-2]["facts"] = {name: getattr(facts, name) for name in RECORDED_FACTS}  # the step's turn
    if facts.irreversible and not episode.end_reason:
        episode.end_reason = "irreversible"
    episode.undoable = facts.irreversible and episode.undo_irreversible
    return AgentStep(env=env.name, split=env.split, task_id=episode.task_id, instruction=env.instruction,
                     task=episode.task, history=history, reply=reply, thought=parse_thought(reply), action=action,
                     observation=observation, reward=reward, done=done, facts=facts,
                     undo_if_wrong=episode.undoable)


def apply_verdict(episode, verdict, max_corrections):
    """Books the judge's Verdict on the episode's last step. A wrong step is masked here, the one
    place that decides it: it stays in the context with "error": true and "loss": false (data.py
    gives it no labels). Returns the correction to execute (none when the step ended the episode,
    unless the episode takes such a step back, or when the episode has had its corrections)."""
    episode.teacher_calls += verdict.calls
    episode.teacher_latency_s += verdict.latency_s
    if verdict.verdict not in ("correct", "unjudged", "wrong") or verdict.verdict == "wrong" and not (
            verdict.action and verdict.content):
        raise ValueError(f"judge: expected a verdict correct, unjudged or wrong (with an action and its "
                         f"content), got {verdict!r}")
    if verdict.verdict == "unjudged":
        episode.unjudged += 1
    if verdict.verdict != "wrong":
        return None
    episode.errors += 1
    episode.messages[-2].update(error=True, loss=False)  # the wrong step stays in context, without loss
    if episode.end_reason and not episode.undoable or episode.steps >= episode.max_steps:
        return None
    if episode.corrections >= max_corrections:
        episode.end_reason = episode.end_reason or "max_corrections"
        return None
    episode.corrections += 1
    return verdict


def correct(episode, verdict):
    """Splices the teacher's correction into the episode: after taking the wrong step back when the
    episode does that, the turn "Reflection: ...\nThought: ...\nAction: ..." (verdict.content) is
    recorded with its parts and its action executed; it is trained on."""
    if episode.undoable:
        episode.take_back()
    fields = {"reflection": verdict.reflection, "thought": verdict.thought, "action": verdict.action}
    episode.execute(verdict.content, verdict.action, fields)
    episode.since_progress.clear()  # the teacher's action is taken as progress


def run_episodes(policy, env_factory, task_ids, *, parallel=8, judge=None, max_corrections=3,
                 max_invalid=None, undo_irreversible=False, done_ids=(), on_episode=None, desc="episodes"):
    """Plays one episode per task id (those in done_ids skipped) in `parallel` slots, each with its
    own env from env_factory(). Each step calls policy(histories, keys) once for all live
    episodes, steps their envs concurrently, then calls judge(step) concurrently for each (when
    given). An engine error ends only its episode (end_reason "env_error: ...") and the slot gets
    a new env. A wrong step that cannot be undone ends its episode, or with undo_irreversible is
    taken back in the env and corrected (Episode.take_back). Returns the trajectories in task_ids
    order; on_episode(trajectory) as each ends."""
    skip = set(done_ids)
    todo = [t for t in task_ids if t not in skip]
    if len(set(todo)) != len(todo):
        raise ValueError("run_episodes: task_ids has duplicates")
    pending, finished = deque(todo), {}
    slots = [Slot() for _ in range(min(parallel, len(todo)))]
    source, judged = ("agent", False) if judge is None else ("reflected", True)
    bar = tqdm(total=len(todo), desc=desc)

    def finish_ended(some_slots):
        for slot in some_slots:
            if slot.episode and slot.episode.end_reason:
                traj = slot.finish(source)
                finished[traj["task"]] = traj
                done = finished.values()
                bar.set_postfix(success=f"{sum(t['success'] for t in done) / len(done):.0%}",
                                score=f"{100 * sum(t['reward'] for t in done) / len(done):.1f}", refresh=False)
                bar.update()
                if on_episode:
                    on_episode(traj)

    def fill_free_slots(pool):
        while pending and (free := [s for s in slots if s.episode is None]):
            starts = [(s, pending.popleft()) for s in free[:len(pending)]]
            list(pool.map(lambda st: st[0].guard(st[0].start, env_factory, st[1], max_invalid, undo_irreversible),
                          starts))
            finish_ended(s for s, _ in starts)  # failed resets

    with ThreadPoolExecutor(max(1, len(slots))) as pool:
        try:
            while True:
                fill_free_slots(pool)
                live = [s for s in slots if s.episode]
                if not live:
                    break
                replies = policy([s.episode.messages for s in live], [s.episode.id for s in live])
                if len(replies) != len(live):
                    raise ValueError(f"policy returned {len(replies)} replies for {len(live)} histories")
                steps = list(pool.map(lambda s, r: s.guard(agent_step, s.episode, r, judged), live, replies))
                finish_ended(s for s, step in zip(live, steps) if step is None)  # the others after their verdict
                asked = [(s, step) for s, step in zip(live, steps) if step is not None]
                verdicts = list(pool.map(lambda a: judge(a[1]), asked))
                fixes = [(s, v) for (s, _), v in zip(asked, verdicts) if apply_verdict(s.episode, v, max_corrections)]
                list(pool.map(lambda f: f[0].guard(correct, f[0].episode, f[1]), fixes))
                finish_ended(s for s, _ in asked)
        finally:
            for slot in slots:
                slot.close_env()
            bar.close()
    return [finished[t] for t in todo]


class Slot:
    """One parallel slot: an env (created on first use, re-created after an engine error) and the
    episode playing in it."""

    def __init__(self):
        self.env = self.episode = None

    def start(self, env_factory, task_id, max_invalid, undo_irreversible=False):
        self.env = self.env or env_factory()
        self.episode = Episode(self.env, task_id, max_invalid, undo_irreversible=undo_irreversible)
        self.episode.begin()

    def guard(self, fn, *args):
        """fn(*args), engine work: an engine's exception ends the episode instead of the run."""
        try:
            return fn(*args)
        except Exception as e:
            if self.episode is None:  # env_factory failed: no env to run anything in
                raise
            log.warning("%s: %s failed", self.episode.id, getattr(fn, "__name__", fn), exc_info=True)
            self.episode.end_reason = f"env_error: {type(e).__name__}: {e}"

    def finish(self, source):
        traj, self.episode = self.episode.trajectory(source), None
        if traj["end_reason"].startswith("env_error"):
            log.warning("%s: %s; the slot gets a new env", traj["id"], traj["end_reason"])
            self.close_env()
        return traj

    def close_env(self):
        if self.env is not None:
            env, self.env = self.env, None
            try:
                env.close()
            except Exception as e:
                log.warning("closing %s env: %s: %s", env.name, type(e).__name__, e)


def golden_trajectory(env, task_id):
    """The expert's trajectory: expert_action() played until done; turns are "Thought: ...\nAction:
    ..." where the expert says why (expert_thought()), else "Action: <action>" (oracle.annotate_golden
    adds thoughts to those). Raises RuntimeError when the expert does not succeed."""
    episode = Episode(env, task_id, max_steps=GOLDEN_MAX_STEPS)
    episode.begin()  # GOLDEN_MAX_STEPS, not the agent's limit: some gold paths are longer
    while not episode.end_reason:
        action, thought = env.expert_action(), env.expert_thought()
        if action is None:
            raise RuntimeError(f"{episode.id}: the expert has no action after {episode.steps} steps "
                               f"and the episode is not done (score {episode.best})")
        episode.execute(render_turn(action, thought), action, thought and {"thought": thought, "action": action})
    if not episode.won:
        raise RuntimeError(f"{episode.id}: the expert's episode ended ({episode.end_reason}) without success "
                           f"(score {episode.best}); last observation: {episode.messages[-1]['content'][:200]!r}")
    return episode.trajectory("golden")


# ----------------------------------------------------------------------------- the agent

AGENT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_agent(path, device, chat_format=None, dtype=None):
    """The agent's model and tokenizer; dtype None: fp32 on a CPU (a tiny model's greedy choices stay
    those of its training precision), bf16 on a GPU."""
    dtype = AGENT_DTYPES[dtype or ("fp32" if device == "cpu" else "bf16")]
    return load_model(path, device=device, dtype=dtype).eval(), load_tokenizer(path, chat_format)


def stop_ids(tokenizer):
    """The ids that end a reply: the chat format's end of turn, and EOS."""
    return {end_of_turn_id(tokenizer), tokenizer.eos_id} - {None}


def make_policy(model, tokenizer, max_new_tokens):
    """The agent: one batched, greedy generate per step over all live episodes, each episode's KV
    cache kept across its turns. A reply ends at the chat format's end of turn (or at EOS)."""
    decoder = CachedDecoder(model)
    ends = stop_ids(tokenizer)

    def policy(histories, keys):
        prompts = [encode_prompt(tokenizer, h) for h in histories]
        replies = decoder.generate(keys, prompts, max_new_tokens, eos_id=ends)
        return [tokenizer.decode(r) for r in replies]
    return policy


def served_policy(url, tokenizer, max_new_tokens, timeout=600.0):
    """The agent served by an OpenAI-compatible /completions endpoint that takes prompts as token ids
    and returns the generated ids (vLLM: `return_token_ids`): every live episode's prompt, encoded
    exactly as in training, in one request, greedy, ending at the chat format's end of turn; the
    server batches and caches the prompts itself."""
    url = url.rstrip("/")
    session = requests.Session()
    try:
        served = session.get(f"{url}/models", timeout=timeout)
        served.raise_for_status()
        model_name = served.json()["data"][0]["id"]
    except (requests.RequestException, ValueError, KeyError, IndexError) as e:
        raise ValueError(f"student server {url}: no model listed at {url}/models ({type(e).__name__}: {e})") from None
    ends = sorted(stop_ids(tokenizer))

    def policy(histories, keys):
        body = {"model": model_name, "prompt": [encode_prompt(tokenizer, h) for h in histories],
                "max_tokens": max_new_tokens, "temperature": 0.0, "stop_token_ids": ends,
                "return_token_ids": True, "skip_special_tokens": False}
        reply = session.post(f"{url}/completions", json=body, timeout=timeout)
        if reply.status_code != 200:
            raise RuntimeError(f"student server {url}/completions: HTTP {reply.status_code}: {reply.text[:300]}")
        choices = sorted(reply.json()["choices"], key=lambda c: c["index"])
        replies = [c["token_ids"] for c in choices]
        return [tokenizer.decode(ids[:-1] if ids and ids[-1] in ends else ids) for ids in replies]
    return policy


@contextlib.contextmanager
def serve_student(command, model_dir, log_path, timeout_s=1800.0):
    """`command --model DIR --port P` (e.g. "python -m vllm.entrypoints.openai.api_server --dtype float32")
    started on a free loopback port, its output to log_path; yields its OpenAI-compatible base URL once it
    lists a model, and stops it after. A server that exits or is not up within timeout_s stops the run
    with its log's path."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [*shlex.split(command), "--model", str(model_dir), "--port", str(port)]
    url, deadline = f"http://127.0.0.1:{port}/v1", time.monotonic() + timeout_s
    with open(log_path, "ab") as log_file:
        server = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        while not listed_model(url):
            if server.poll() is not None:
                raise RuntimeError(f"student server `{command}` exited ({server.returncode}); its log: {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"student server `{command}` not up after {timeout_s:.0f} s; its log: {log_path}")
            time.sleep(1)
        log.info("student server for %s up at %s", model_dir, url)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def listed_model(url):
    try:
        return requests.get(f"{url}/models", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def finished_ids(*paths):
    """The tasks whose episodes the files hold (those that exist)."""
    return {t["task"] for path in paths if Path(path).exists() for t in read_jsonl(path)}


def run_agent(cfg: AgentConfig, out_file, judge=None, max_corrections=0, undo_irreversible=False,
              mark=lambda trajectory: trajectory):
    """Episodes of the agent in cfg.model on the selected tasks, appended to out_file as they finish
    (so that a rerun resumes), then rewritten in task order: the file does not depend on which
    episode finished first. Under torchrun rank r plays tasks r, r + N... with its own copy of the
    agent into a part file of its own, and rank 0 merges the parts into out_file."""
    device = distributed.start(cfg.device or default_device(), "gloo", distributed.ROLLOUT_TIMEOUT)  # ranks
    torch.set_num_threads(cfg.threads or physical_cores())  # float reductions depend on the thread count
    if cfg.student_url:
        policy = served_policy(cfg.student_url, load_tokenizer(cfg.model, cfg.chat_format), cfg.max_new_tokens)
    else:
        model, tokenizer = load_agent(cfg.model, device, cfg.chat_format, cfg.dtype)
        policy = make_policy(model, tokenizer, cfg.max_new_tokens)
    listed = cfg.listed()
    new_env = functools.partial(cfg.new_env, listed)
    spare = [new_env()]  # lists the tasks, then serves as the first slot's env (a JVM start saved)
    task_ids = cfg.select_tasks(spare[0], listed)
    written = part_file(out_file, distributed.rank()) if distributed.world_size() > 1 else out_file  # ranks
    try:
        run_episodes(policy, lambda: spare.pop() if spare else new_env(), distributed.share(task_ids),
                     parallel=cfg.parallel, judge=judge, max_corrections=max_corrections, max_invalid=cfg.max_invalid,
                     undo_irreversible=undo_irreversible, done_ids=finished_ids(out_file, *part_files(out_file)),
                     on_episode=lambda t: append_jsonl(written, mark(t)))
    finally:
        for env in spare:  # unused when every task was already done
            env.close()
    distributed.barrier()  # ranks: every part written
    if distributed.is_main():
        merge_in_task_order(out_file, task_ids)
    distributed.barrier()  # ranks: out_file merged
    by_task = {t["task"]: t for t in read_jsonl(out_file)}
    return [by_task[t] for t in task_ids if t in by_task]


def part_file(out_file, rank):
    """Where rank `rank` of a torchrun launch writes its episodes before they are merged into out_file."""
    return Path(f"{out_file}.rank{rank}")


def part_files(out_file):
    return sorted(Path(out_file).parent.glob(f"{glob.escape(Path(out_file).name)}.rank*"))


def merge_in_task_order(out_file, task_ids):
    """out_file and the ranks' part files (of this launch, or of an interrupted one on any number of
    ranks) into out_file, each task once, in task_ids order; episodes of tasks not in task_ids after
    them. The parts are removed once out_file holds them."""
    parts = part_files(out_file)
    by_task = {t["task"]: t for path in [out_file, *parts] if Path(path).exists() for t in read_jsonl(path)}
    selected = set(task_ids)
    in_task_order = [by_task[t] for t in task_ids if t in by_task] + [t for t in by_task.values()
                                                                       if t["task"] not in selected]
    text = "".join(json.dumps(t) + "\n" for t in in_task_order)
    if not Path(out_file).exists() or Path(out_file).read_text() != text:  # untouched when already in order
        write_atomic(out_file, text)
    for part in parts:
        part.unlink()
