"""Qualify a teacher before a long run (`step.py teacher-eval`): the agent steps recorded in a stage-2
file are replayed in the engine, each shown to the teacher as it was shown to the teacher that judged
it, and the answers are compared with the recorded verdicts. The same replay judges an evaluation's
steps by the oracle afterwards (`step.py judge`): what the agents' steps were worth at test time.

    teacher_eval("runs/quick/seed-0/reflected.jsonl", TeacherConfig(url="http://127.0.0.1:8000/v1"))
    judge_episodes(["runs/quick/seed-0/eval/step/test/episodes.jsonl"])
"""
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import envs
import oracle
import rollout
from data import StepError, load_trajectories, parse_action, write_json
from envs import norm_action
from pipeline import connect_teacher, golden_references
from teacher import TeacherConfig, TeacherUnavailable, Verdict, teacher_prompt


def recorded_steps(env, trajectory):
    """The agent steps of a recorded episode that its teacher judged, each rebuilt as the judge saw
    it by replaying the episode in `env` through the episode loop's own code (rollout.agent_step),
    with the verdict recorded: "wrong" for a step marked as an error, else "correct". Steps the run
    took back (irreversible "undo") are taken back again before their correction."""
    messages = trajectory["messages"]
    episode = rollout.Episode(env, trajectory["task"], max_steps=trajectory["steps"] + 1,  # it ends where it ended
                              undo_irreversible=bool(trajectory.get("taken_back")))
    episode.begin()
    steps = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if "reflection" in message:  # a correction: executed, not judged
            rollout.correct(episode, Verdict("wrong", **{k: message[k] for k in
                                                         ("reflection", "thought", "action", "content")}))
            step = None
        else:
            step = rollout.agent_step(episode, message["content"], judged=True)
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
        recorded = parse_action(message["content"]) if message["role"] == "assistant" else None
        if recorded is not None:
            env.step(recorded)
            if message.get("taken_back") or i == index and take_back:
                env.undo()
    return not env.step(action)[3]["invalid"]


def teacher_eval(data, teacher: TeacherConfig, golden_file=None, episodes=None, parallel=8, out=None):
    """The report on a teacher: agreement with the verdicts recorded in `data` (a reflected.jsonl),
    the parse rate, latency, prompt and answer tokens, and the share of the teacher's corrected
    actions that the engine accepts (executed in a fresh engine from the recorded state). episodes:
    the first N episodes whose every step was judged [all]; out: also write the report there."""
    recorded = [t for t in load_trajectories(data) if t["source"] == "reflected"]
    usable = [t for t in recorded if not t.get("unjudged") and not str(t.get("end_reason")).startswith("env_error")]
    usable = usable[:episodes]
    if not usable:
        raise StepError(f"{data}: no reflected episode whose every step was judged")
    goldens = golden_references(teacher.reference, golden_file)
    client = connect_teacher(teacher, parallel)
    steps, engines = [], {}
    try:
        for t in usable:
            if (t["env"], t["split"]) not in engines:
                engines[t["env"], t["split"]] = envs.make_env(t["env"], t["split"])
            steps += recorded_steps(engines[t["env"], t["split"]], t)
        with ThreadPoolExecutor(parallel) as pool:
            verdicts = list(pool.map(lambda s: client.judge(s["step"], teacher.reference,
                                                            goldens.get(s["step"].task_id)), steps))
        accepted = [engine_accepts(engines[(s["trajectory"]["env"], s["trajectory"]["split"])], s["trajectory"],
                                   s["index"], v.action, s["step"].undo_if_wrong)
                    for s, v in zip(steps, verdicts) if v.verdict == "wrong"]
    except TeacherUnavailable as e:
        raise StepError(str(e)) from None
    finally:
        for env in engines.values():
            env.close()
    pairs = [(s["recorded"], v.verdict) for s, v in zip(steps, verdicts)]
    judged = [(r, v) for r, v in pairs if v != "unjudged"]
    report = {
        "data": str(data), "teacher_url": teacher.url, "teacher_model": teacher.model,
        "response_format": client.response_format, "episodes": len(usable),
        "episodes_left_out": len(recorded) - len(usable), "steps": len(steps),
        "agreement": round(sum(r == v for r, v in judged) / max(len(judged), 1), 4),
        "verdicts": {f"recorded {r}": dict(Counter(v for rr, v in pairs if rr == r)) for r in ("correct", "wrong")},
        "corrections": len(accepted), "corrections_accepted": sum(accepted),
        "acceptance_rate": round(sum(accepted) / max(len(accepted), 1), 4),
        **client.stats.summary(),
    }
    if out:
        write_json(Path(out), report)
    print(json.dumps(report, indent=2))
    return report


def oracle_error(step):
    """The oracle's reason why an AgentStep is wrong (oracle.error_kind), None when it is right: read
    from the prompt a teacher is shown, as stage 2's oracle reads it."""
    facts = oracle.read_step(teacher_prompt(step)[-1]["content"])
    return oracle.error_kind(facts) if facts["known"] else None


JUDGED_GROUPS = ("all steps", "steps with a Reflection: line", "steps right after a wrong step")


def judged_steps(env, trajectory):
    """(the groups a step of a recorded episode counts in, its oracle_error, whether it was the
    expert's own next action) for each step that stage 2 would judge."""
    wrong_at = None
    for s in recorded_steps(env, trajectory):
        step, error = s["step"], oracle_error(s["step"])
        expert = step.facts.expert_before
        own = None not in (step.action, expert) and norm_action(step.action) == norm_action(expert)
        after_wrong = wrong_at == s["index"] - 2  # the step before, with only its answer between them
        yield [JUDGED_GROUPS[0], *[JUDGED_GROUPS[1]] * ("Reflection:" in step.reply),
               *[JUDGED_GROUPS[2]] * after_wrong], error, own
        wrong_at = s["index"] if error else None


def judge_episodes(data, expert=None, out=None):
    """The oracle's verdicts on recorded episodes (evaluations' episodes.jsonl files; several are
    counted together): every step replayed in the engine as stage 2 would judge it. For all steps,
    for the steps whose reply has a `Reflection:` line (the agent correcting itself at test time) and
    for the steps right after one judged wrong: how many were right, and how many were the expert's
    own next action; and why the wrong ones were wrong. expert: ALFWorld's, to judge by [its default]."""
    counts = {group: Counter() for group in JUDGED_GROUPS}
    errors, engines, episodes = Counter(), {}, 0
    try:
        for path in data:
            for t in load_trajectories(path):
                key = (t["env"], t["split"])
                if key not in engines:
                    options = {"expert": expert} if expert and t["env"] == "alfworld" else {}
                    engines[key] = envs.make_env(*key, **options)
                episodes += 1
                for groups, error, own in judged_steps(engines[key], t):
                    for group in groups:
                        counts[group].update(steps=1, right=error is None, experts_own=own)
                    errors[error or "right"] += 1
    finally:
        for env in engines.values():
            env.close()
    report = {"data": [str(p) for p in data], "episodes": episodes, "errors": dict(errors.most_common()),
              **{group: {"steps": c["steps"], "right": c["right"], "experts_own": c["experts_own"],
                         "right_share": round(c["right"] / max(c["steps"], 1), 4),
                         "experts_own_share": round(c["experts_own"] / max(c["steps"], 1), 4)}
                 for group, c in counts.items()}}
    if out:
        write_json(Path(out), report)
    print(json.dumps(report, indent=2))
    return report
