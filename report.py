"""The results of a pipeline run over its seeds: means with 95 % intervals, paired comparisons, the
data each variant was trained on, results.json, results.md and results.png. `step.py report` gives
the results over the seeds of several runs of one setting (seeds run on different machines).

Every variant is evaluated on the same test tasks with every seed, so an evaluation split is a grid
of episodes [seeds, tasks]. Intervals come from a two-way bootstrap that resamples seeds and tasks
independently (both are random draws: a new seed and a new task each move the score), which with
one seed is the usual bootstrap over test tasks. Comparisons are paired: the difference a - b is
taken episode by episode on the same (seed, task), its interval from the same bootstrap, its
p-value from a sign-flip permutation test on the per-task differences averaged over seeds (exact
up to 16 tasks). Both use a fixed generator, so the same episodes give the same report.
"""
import itertools
import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

import envs
from data import parse_action, read_jsonl, write_atomic, write_json

log = logging.getLogger("step.report")

BOOTSTRAP_SAMPLES = 4000
PERMUTATIONS = 20000
# The comparisons a STeP study is about, when both variants ran; step is also compared with each of
# its ablations (step-*), and every variant with golden-only, the paper's baseline.
KEY_COMPARISONS = [("step", "golden-only"), ("step", "base"), ("step", "step-nomask")]


def episode_values(episode, env_name):
    """(metric, success) of one episode, x100: the metric is ALFWorld's success, else the reward
    (SciWorld: the best score reached), as the literature reports them."""
    success = 100.0 * episode["success"]
    return (success if envs.METRICS.get(env_name) == "success" else 100.0 * episode["reward"]), success


def episode_grid(episodes_by_seed, env_name, where):
    """{"metric", "success"}: arrays [seeds, tasks] in the first seed's task order, and the tasks."""
    tasks = [e["task"] for e in next(iter(episodes_by_seed.values()))]
    metric, success = [], []
    for seed, episodes in episodes_by_seed.items():
        by_task = {e["task"]: episode_values(e, env_name) for e in episodes}
        missing = [t for t in tasks if t not in by_task]
        if missing or len(by_task) != len(tasks):
            raise ValueError(f"{where}, seed {seed}: the episodes are not those of the other seeds "
                             f"({len(by_task)} tasks, {len(missing)} missing, e.g. {missing[:2]})")
        metric.append([by_task[t][0] for t in tasks])
        success.append([by_task[t][1] for t in tasks])
    return {"metric": np.array(metric), "success": np.array(success)}, tasks


def bootstrap_ci(grid, rng, samples=BOOTSTRAP_SAMPLES):
    """95 % percentile interval of the grid's mean, resampling rows (seeds) and columns (tasks)."""
    n_seeds, n_tasks = grid.shape
    seeds = rng.integers(0, n_seeds, size=(samples, n_seeds))
    tasks = rng.integers(0, n_tasks, size=(samples, n_tasks))
    means = grid[seeds[:, :, None], tasks[:, None, :]].mean(axis=(1, 2))  # [samples]
    low, high = np.percentile(means, [2.5, 97.5])
    return [round(float(low), 2), round(float(high), 2)]


def sign_flip_p(differences, rng, permutations=PERMUTATIONS):
    """Two-sided p-value of a paired sign-flip test: under "no difference" each task's difference is
    as likely to have either sign. Exact over all 2^n sign patterns up to n = 16."""
    d = np.asarray(differences, dtype=float)
    observed = abs(d.mean())
    if not np.any(d):
        return 1.0
    if len(d) <= 16:
        signs = np.array(list(itertools.product([1.0, -1.0], repeat=len(d))))
        return float(np.mean(np.abs(signs @ d / len(d)) >= observed - 1e-12))
    signs = rng.choice([1.0, -1.0], size=(permutations, len(d)))
    extreme = np.sum(np.abs(signs @ d / len(d)) >= observed - 1e-12)
    return float((extreme + 1) / (permutations + 1))


def variance_components(grid):
    """Standard deviations of a [seeds, tasks] grid's parts (two-way analysis of variance without
    replication): a task effect shared by the seeds, a seed effect shared by the tasks, and the
    rest. With one seed, task and rest cannot be told apart: all of it counts as the task part."""
    n_seeds, n_tasks = grid.shape
    mean, seed_means, task_means = grid.mean(), grid.mean(axis=1), grid.mean(axis=0)
    if n_seeds == 1:
        return {"task": float(np.std(grid, ddof=1)) if n_tasks > 1 else 0.0, "seed": None, "rest": 0.0}
    rest = grid - seed_means[:, None] - task_means[None, :] + mean
    ms_rest = float((rest ** 2).sum()) / ((n_seeds - 1) * (n_tasks - 1))
    ms_seed = n_tasks * float(((seed_means - mean) ** 2).sum()) / (n_seeds - 1)
    ms_task = n_seeds * float(((task_means - mean) ** 2).sum()) / (n_tasks - 1)
    return {"task": max(0.0, (ms_task - ms_rest) / n_seeds) ** 0.5,
            "seed": max(0.0, (ms_seed - ms_rest) / n_tasks) ** 0.5, "rest": ms_rest ** 0.5}


def family_means(grid, tasks, env_name):
    families = {}
    for i, task in enumerate(tasks):
        families.setdefault(envs.task_family(env_name, task), []).append(i)
    return {family: round(float(grid[:, idx].mean()), 2) for family, idx in families.items()}


def trained_data(runs, variant):
    """Mean over seeds of what the variant was trained on (its last training run)."""
    summaries = [json.loads((seed_dir / variant / "train_summary.json").read_text()) for seed_dir in runs.values()]
    return {"trained_trajectories": float(np.mean([s["samples"] for s in summaries])),
            "trained_tokens": float(np.mean([s["tokens"] for s in summaries])),
            "trainable_tokens": float(np.mean([s["trainable_tokens"] for s in summaries]))}


END_REASONS = ("done", "max_steps", "invalid_actions")


def steps_repeated(messages):
    """For each reply with an action, whether it has a `Reflection:` line and whether the step
    repeats an earlier step of the episode with the same answer (an agent caught in a loop)."""
    seen, steps = set(), []
    for reply, answer in zip(messages, messages[1:]):
        action = parse_action(reply["content"]) if reply["role"] == "assistant" else None
        if action and answer["role"] == "user":
            steps.append(("Reflection:" in reply["content"], (action, answer["content"]) in seen))
            seen.add((action, answer["content"]))
    return steps


TAKE = re.compile(r"take (.+?) from ")  # ALFWorld's command; SciWorld and WebShop have none


def first_take_seen(messages):
    """Whether the episode's first `take X from Y` names an object X that the answer to an earlier
    step showed (an agent that looks before it takes) or one it guessed; None without a take. The
    first observation, which lists the room's receptacles, does not count: they cannot be taken."""
    observed, stepped = "", False
    for message in messages:
        if message["role"] == "assistant":
            stepped = True
            take = TAKE.match(parse_action(message["content"]) or "")
            if take:
                return re.search(rf"\b{re.escape(take.group(1))}\b", observed) is not None
        elif stepped:
            observed += message["content"] + "\n"
    return None


def share(flags):
    """% of True among flags, None when there is nothing to count."""
    return round(100 * float(np.mean(flags)), 2) if flags else None


def behaviour(episodes):
    """What the agent did at test time: the share of episodes in which a reply has a `Reflection:`
    line (a reflection placed at the start of a thought cannot be told apart from a thought), the
    reflection lines per episode, the share of steps that repeat an earlier step with the same answer,
    over all steps and over the steps whose reply reflects, the share of the episodes with a `take` whose
    first one names an object already seen (None without any), and how the episodes ended (% of episodes)."""
    reflections = [sum("Reflection:" in m["content"] for m in e["messages"] if m["role"] == "assistant")
                   for e in episodes]
    steps = [step for e in episodes for step in steps_repeated(e["messages"])]
    after_reflection = [repeated for reflected, repeated in steps if reflected]
    takes = [seen for seen in (first_take_seen(e["messages"]) for e in episodes) if seen is not None]
    ends = Counter(e["end_reason"] if e["end_reason"] in END_REASONS else "other" for e in episodes)
    return {"reflecting_episodes": share([n > 0 for n in reflections]),
            "reflections_per_episode": round(float(np.mean(reflections)), 3),
            "repeated_steps": share([r for _, r in steps]),
            "repeated_after_reflection": share(after_reflection),
            "first_take_seen": share(takes),
            "end_reasons": {reason: round(100 * ends[reason] / len(episodes), 2) for reason in [*END_REASONS, "other"]}}


def variant_rows(runs, episodes, settings, rng):
    """A row per variant and split, and the grids the comparisons need."""
    rows, grids = [], {}
    for variant, split in itertools.product(settings["variants"], settings["splits"]):
        by_seed = {seed: episodes[seed, variant, split] for seed in runs}
        grid, tasks = episode_grid(by_seed, settings["env"], f"{variant} on {split}")
        grids[variant, split] = grid, tasks
        n_seeds, n_tasks = grid["metric"].shape
        rows.append({
            "variant": variant, "split": split,
            "score": round(float(grid["metric"].mean()), 2), "score_ci95": bootstrap_ci(grid["metric"], rng),
            "success_rate": round(float(grid["success"].mean()), 2), "success_ci95": bootstrap_ci(grid["success"], rng),
            "episodes": n_seeds * n_tasks, "seeds": n_seeds, "tasks": n_tasks,
            "seed_scores": [round(float(s), 2) for s in grid["metric"].mean(axis=1)],
            "family_scores": family_means(grid["metric"], tasks, settings["env"]),
            "behaviour": behaviour([e for seed in runs for e in episodes[seed, variant, split]]),
            **trained_data(runs, variant)})
    return rows, grids


def comparison_pairs(variants):
    pairs = [p for p in KEY_COMPARISONS if set(p) <= set(variants)]
    pairs += [("step", v) for v in variants if v.startswith("step-") and "step" in variants]
    pairs += [(v, "golden-only") for v in variants if "golden-only" in variants and v != "golden-only"]
    return list(dict.fromkeys(pairs))


def comparisons(grids, settings, rng):
    out = []
    for (a, b), split in itertools.product(comparison_pairs(settings["variants"]), settings["splits"]):
        (grid_a, tasks_a), (grid_b, tasks_b) = grids[a, split], grids[b, split]
        if tasks_a != tasks_b:
            raise ValueError(f"{a} and {b} on {split} were evaluated on different tasks: no paired comparison")
        diff = grid_a["metric"] - grid_b["metric"]
        success_diff = grid_a["success"] - grid_b["success"]
        out.append({"a": a, "b": b, "split": split, "diff": round(float(diff.mean()), 2),
                    "ci95": bootstrap_ci(diff, rng), "p": float(f"{sign_flip_p(diff.mean(axis=0), rng):.2g}"),
                    "success_diff": round(float(success_diff.mean()), 2),
                    "success_ci95": bootstrap_ci(success_diff, rng),
                    "spread": {k: None if v is None else round(v, 2) for k, v in variance_components(diff).items()}})
    return out


UNDO_FILE = "reflected-undo.jsonl"  # the second stage 2 (pipeline.STAGE2), made for the variant step-undo


def data_balance(runs):
    """Per task family, the mean over seeds of the golden trajectories in D1 and U2, of the stage-2
    episodes and of the reflected trajectories kept (successful) for training; with stage 2's second
    file (UNDO_FILE), its kept trajectories too."""
    counts, undo = {}, all((seed_dir / UNDO_FILE).exists() for seed_dir in runs.values())
    for seed_dir in runs.values():
        d1, u2, reflected = (envs.family_counts(read_jsonl(seed_dir / name))
                             for name in ("d1.jsonl", "u2_golden.jsonl", "reflected.jsonl"))
        undone = envs.family_counts(read_jsonl(seed_dir / UNDO_FILE)) if undo else {}
        for family in set(d1) | set(u2) | set(reflected):
            row = counts.setdefault(family, dict.fromkeys(["d1", "u2_golden", "reflected_episodes", "reflected_kept"]
                                                          + ["undo_kept"] * undo, 0))
            row["d1"] += d1.get(family, {}).get("episodes", 0)
            row["u2_golden"] += u2.get(family, {}).get("episodes", 0)
            row["reflected_episodes"] += reflected.get(family, {}).get("episodes", 0)
            row["reflected_kept"] += reflected.get(family, {}).get("success", 0)  # synthesis trains on the successes
            if undo:
                row["undo_kept"] += undone.get(family, {}).get("success", 0)
    return {family: {k: n / len(runs) for k, n in row.items()} for family, row in sorted(counts.items())}


def stage2_counts(episodes):
    return {"episodes": len(episodes), "kept": sum(bool(e.get("train")) for e in episodes),
            **{key: sum(e.get(key, 0) for e in episodes) for key in ("errors", "corrections", "taken_back", "unjudged")}}


def stage2_summary(runs):
    """Per seed: what stage 2 produced (and its second file's, under "undo", when there is one)."""
    out = {}
    for seed, seed_dir in runs.items():
        out[str(seed)] = stage2_counts(read_jsonl(seed_dir / "reflected.jsonl"))
        if (seed_dir / UNDO_FILE).exists():
            out[str(seed)]["undo"] = stage2_counts(read_jsonl(seed_dir / UNDO_FILE))
    return out


def eval_dir(seed_dir, variant, split):
    return Path(seed_dir) / "eval" / variant / split


def report_seeds(out, runs, settings):
    """results.json, results.md and results.png in `out` over the seed folders `runs` ({seed: folder});
    settings: as in results.json (SETTINGS). Returns the results dict."""
    episodes = {(seed, variant, split): read_jsonl(eval_dir(seed_dir, variant, split) / "episodes.jsonl")
                for seed, seed_dir in runs.items() for variant in settings["variants"] for split in settings["splits"]}
    return write_results(out, runs, episodes, settings)


def write_results(run, runs, episodes, settings):
    """results.json, results.md and results.png in `run`; returns the results dict.
    runs: {seed: seed folder}; episodes: {(seed, variant, split): evaluation episodes}."""
    rng = np.random.default_rng(0)
    rows, grids = variant_rows(runs, episodes, settings, rng)
    results = {**settings, "rows": rows, "comparisons": comparisons(grids, settings, rng),
               "data": data_balance(runs), "stage2": stage2_summary(runs)}
    write_json(run / "results.json", results)
    write_atomic(run / "results.md", markdown(results))
    plot(run / "results.png", results, runs)
    return results


def plus_minus(value, ci):
    return f"{value:.1f} ± {(ci[1] - ci[0]) / 2:.1f}"


def percent(value):
    """A share for a table; "-" when nothing was there to count."""
    return "-" if value is None else f"{value:.1f}"


def markdown_table(results):
    head = "| variant | split | score | success % | seeds x tasks | trained trajectories | trainable tokens |\n" \
           "|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r['variant']} | {r['split']} | {plus_minus(r['score'], r['score_ci95'])} | "
        f"{plus_minus(r['success_rate'], r['success_ci95'])} | {r['seeds']} x {r['tasks']} | "
        f"{r['trained_trajectories']:.0f} | {r['trainable_tokens']:.0f} |\n" for r in results["rows"])


def markdown(results):
    seeds = ", ".join(map(str, results["seeds"]))
    lines = [f"# STeP on {results['env']}: seeds {seeds}, student {results['model']}", "",
             "Mean ± half-width of the 95 % interval (two-way bootstrap over seeds and test tasks).", "",
             markdown_table(results), "## Paired comparisons (same seeds and tasks)", "",
             "| a - b | split | score diff [95 % CI] | p (sign-flip) | success diff [95 % CI] |", "|---|---|---|---|---|"]
    lines += [f"| {c['a']} - {c['b']} | {c['split']} | {c['diff']:+.1f} [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}] | "
              f"{c['p']:.3g} | {c['success_diff']:+.1f} [{c['success_ci95'][0]:+.1f}, {c['success_ci95'][1]:+.1f}] |"
              for c in results["comparisons"]]
    families = sorted({f for r in results["rows"] for f in r["family_scores"]})
    lines += ["", "## Score by task family", "", "| variant | split | " + " | ".join(families) + " |",
              "|---|---|" + "---|" * len(families)]
    lines += [f"| {r['variant']} | {r['split']} | " + " | ".join(f"{r['family_scores'].get(f, float('nan')):.1f}"
                                                                for f in families) + " |" for r in results["rows"]]
    takes = any(r["behaviour"]["first_take_seen"] is not None for r in results["rows"])  # ALFWorld only
    lines += ["", "## What the agents did (every seed's episodes)", "",
              "| variant | split | episodes with a Reflection: line % | reflection lines an episode | "
              "steps repeating an earlier step and its answer % | of the steps after a reflection % | "
              + "first take of an object already seen % | " * takes
              + "ended: done % | max steps % | invalid actions % | other % |",
              "|---|---|---|---|---|---|" + "---|" * takes + "---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['split']} | {r['behaviour']['reflecting_episodes']:.1f} | "
              f"{r['behaviour']['reflections_per_episode']:.2f} | {percent(r['behaviour']['repeated_steps'])} | "
              f"{percent(r['behaviour']['repeated_after_reflection'])} | "
              + f"{percent(r['behaviour']['first_take_seen'])} | " * takes
              + " | ".join(f"{r['behaviour']['end_reasons'][k]:.1f}" for k in [*END_REASONS, "other"]) + " |"
              for r in results["rows"]]
    undo = any("undo_kept" in c for c in results["data"].values())
    lines += ["", "## Training data by task family (mean over seeds)", "",
              "| family | D1 golden | U2 golden | stage-2 episodes | reflected kept |" + " kept with undo |" * undo,
              "|---|---|---|---|---|" + "---|" * undo]
    lines += [f"| {f} | {c['d1']:.1f} | {c['u2_golden']:.1f} | {c['reflected_episodes']:.1f} | {c['reflected_kept']:.1f} |"
              + (f" {c['undo_kept']:.1f} |" if undo else "") for f, c in results["data"].items()]
    return "\n".join(lines) + "\n"


def plot(path, results, runs):
    """Each variant's score with its interval per split, and the training-loss curves."""
    import matplotlib
    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    variants, splits = results["variants"], results["splits"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(splits)
    for k, split in enumerate(splits):
        rows = {r["variant"]: r for r in results["rows"] if r["split"] == split}
        x = np.arange(len(variants)) + (k - (len(splits) - 1) / 2) * width
        scores = np.array([rows[v]["score"] for v in variants])
        ci = np.array([rows[v]["score_ci95"] for v in variants])
        left.bar(x, scores, width, yerr=[scores - ci[:, 0], ci[:, 1] - scores], capsize=3, label=split)
    left.set_xticks(np.arange(len(variants)), variants, rotation=20)
    left.set_ylabel("score (95 % CI)")
    left.set_title(f"{results['env']}, {len(results['seeds'])} seed(s)")
    left.legend()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, variant in enumerate(variants):
        for j, seed_dir in enumerate(runs.values()):
            log_file = Path(seed_dir) / variant / "train_log.jsonl"
            records = read_jsonl(log_file) if log_file.exists() else []
            right.plot([r["step"] for r in records], [r["loss"] for r in records], color=colors[i % len(colors)],
                       alpha=0.8, linewidth=1, label=variant if j == 0 else None)
    right.set_xlabel("optimizer step (stage 1 for base, stage 3 for the variants)")
    right.set_ylabel("training loss")
    right.set_yscale("log")
    right.legend()
    fig.tight_layout()
    tmp = Path(f"{path}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ----------------------------------------------------------------------------- step.py report

SETTINGS = ("env", "quick", "seeds", "variants", "splits", "eval_set", "model")  # results.json's, in order
# What a seed's results are computed from, relative to its folder: trajectories, training logs and
# summaries, evaluation episodes. No model: a folder of records can be kept (docs/) and reported again.
SEED_RECORDS = ("*.jsonl", "*.txt", "*/train_log.jsonl", "*/train_summary.json", "eval/*/*/*")


def copy_records(seed_dir, out):
    """seed_dir's records (SEED_RECORDS) into the folder `out`; nothing when they are the same folder."""
    if out.exists() and out.resolve() == seed_dir.resolve():
        return
    for pattern in SEED_RECORDS:
        for file in sorted(seed_dir.glob(pattern)):
            target = out / file.relative_to(seed_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)


def report_runs(run_dirs, out):
    """The results over the seeds of several pipeline runs of one setting, e.g. seeds run on
    different machines: each RUN's results.json names its seeds and its setting, which must be the
    same in every RUN but for the seeds, and no seed may be in two RUNs. Writes results.json,
    results.md and results.png into --out, beside each seed's records (seed-K/: trajectories, training
    logs, evaluation episodes; no models), so that --out can itself be a RUN of a later report."""
    out, runs, settings = Path(out), {}, None
    for run in map(Path, run_dirs):
        results = json.loads((run / "results.json").read_text())
        missing = [key for key in SETTINGS if key not in results]
        if missing:
            raise ValueError(f"{run / 'results.json'}: not a pipeline's results (no {', '.join(missing)})")
        setting = {key: results[key] for key in SETTINGS}
        if settings is None:
            settings = setting  # the first RUN's; every other RUN is compared with it
        differ = [key for key in SETTINGS if key != "seeds" and setting[key] != settings[key]]
        if differ:
            raise ValueError(f"{run / 'results.json'}: another setting than {run_dirs[0]}'s "
                             f"({', '.join(f'{k}: {setting[k]!r} against {settings[k]!r}' for k in differ)})")
        for seed in results["seeds"]:
            if seed in runs:
                raise ValueError(f"seed {seed} is in {runs[seed].parent} and in {run}: a seed can be reported once")
            runs[seed] = run / f"seed-{seed}"
            if not runs[seed].is_dir():
                raise FileNotFoundError(f"{runs[seed]}: no such folder, though {run / 'results.json'} names seed {seed}")
    records = {}
    for seed in sorted(runs):
        records[seed] = out / f"seed-{seed}"
        copy_records(runs[seed], records[seed])
    results = report_seeds(out, records, {**settings, "seeds": sorted(runs)})
    print(markdown_table(results))
    return results
