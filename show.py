"""The records as a static site, to see what STeP trains on: `step.py show PATH --out DIR`.

PATH is a run or study folder (results.md and results.png; seed-K/ with its trajectories and its
evaluation episodes) or one JSONL file of trajectories or episodes. DIR gets index.html (the results,
and each seed's files with their counts), a page per file (its episodes in a table to sort and filter)
and a page per episode: turn by turn, with the steps the teacher judged wrong, its reflections and
corrections, and what training sees of the trajectory under each of train's switches.

The training view is data.apply_variant's message list, the one build_samples encodes: a message with
"loss" gets labels on its tokens and on its end-of-turn token (data.encode_pair), every other message
is context. It is drawn message by message, so no tokenizer is needed; what --max-len cuts off a long
trajectory (whole pairs at its end) is not drawn.

Everything shown is text from models, engines and teachers: it is escaped (html.escape; JSON inside a
<script> has every "<" escaped), and each page allows nothing but its own inline script and style and
data: images (a Content-Security-Policy), so the site opens from disk, offline.
"""
import base64
import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import envs
from data import apply_variant, load_trajectories, marked_for_training, parse_action, parse_thought, render_turn
from report import UNDO_FILE
from teacher import plan_size, yes_no

GENERATOR = "step.py show"  # index.html's mark: a folder that has it may be replaced by a new site
CSP = "default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

# What each stage's file holds, in the order of the stages.
STAGE_FILES = {"golden.jsonl": "golden trajectories of the training tasks (the engine's expert)",
               "d1.jsonl": "D1: golden trajectories, stage 1's data (and every variant's)",
               "u2_golden.jsonl": "U2's golden trajectories (golden-only's data)",
               "reflected.jsonl": "stage 2: the base agent on U2, the teacher judging each step (step's data)",
               UNDO_FILE: "stage 2 with --irreversible undo (step-undo's data)"}

# train's switches that change what is trained of a trajectory, with data.apply_variant's arguments.
TRAINING_VIEWS = [("default", {}), ("--no-mask-errors", {"mask_errors": False}),
                  ("--no-reflection", {"reflection": False}),
                  ("--reflection-placement thought", {"placement": "thought"})]

END_REASONS = {"done": "the environment ended it", "max_steps": "out of steps",
               "invalid_actions": "too many invalid actions in a row",
               "irreversible": "a wrong step that cannot be undone",
               "max_corrections": "a wrong step after the teacher's last correction"}

PAGE_SIZE = 100  # rows of a file's table at once: a file of thousands of episodes still opens at once


def esc(value):
    return html.escape(str(value), quote=True)


def script_json(obj):
    """JSON to embed in a <script> element: every "<" escaped, so that no "</script>" or "<!--" in
    the text can end the element or change how it is read."""
    return json.dumps(obj).replace("<", "\\u003c")


# ----------------------------------------------------------------------------- the files

@dataclass
class RecordFile:
    """One JSONL file of the site: its path, its group on the index ("seed-K", or "" for a run's
    shared files), what it holds, and the folder of its pages in the site (index.html for the file,
    I.html for its I-th record)."""
    path: Path
    group: str
    what: str
    folder: str

    def root(self):
        """The way from the file's pages up to the site's root."""
        return "../" * (self.folder.count("/") + 1)

    def title(self):
        """The file's path in the run or study folder."""
        return f"{self.folder}.jsonl"

    def name(self):
        """The file's path in its group."""
        return self.title()[len(self.group) + 1:] if self.group else self.title()


def record_files(path):
    """The trajectory files of a run or study folder, shared files first, then each seed's in the
    order of the stages and its evaluations; or the one file `path`."""
    path = Path(path)
    if path.is_file():
        return [record_file(path, path.parent, "")]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    seeds = sorted((d for d in path.glob("seed-*") if d.is_dir() and d.name[5:].isdigit()),
                   key=lambda d: int(d.name[5:]))
    files = [record_file(f, path, "") for f in in_stage_order(path.glob("*.jsonl"))]
    for seed_dir in seeds:
        files += [record_file(f, path, seed_dir.name) for f in in_stage_order(seed_dir.glob("*.jsonl"))]
        files += [record_file(f, path, seed_dir.name) for f in sorted(seed_dir.glob("eval/*/*/episodes.jsonl"))]
    return files


def in_stage_order(paths):
    order = list(STAGE_FILES)
    return sorted(paths, key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))


def record_file(path, root, group):
    relative = path.relative_to(root)
    if path.name in STAGE_FILES:
        what = STAGE_FILES[path.name]
    elif len(relative.parts) >= 4 and relative.parts[-4] == "eval":  # eval/VARIANT/SPLIT/episodes.jsonl
        what = f"evaluation of {relative.parts[-3]} on {relative.parts[-2]}"
    else:
        what = "trajectories"
    return RecordFile(path, group, what, relative.with_suffix("").as_posix())


def trained(record):
    """Whether training reads the record (golden trajectories, and stage 2's episodes marked for it);
    None for an evaluation episode, which no training reads."""
    return None if record["source"] == "agent" else marked_for_training(record)


def episode_row(i, record):
    """A record's row in its file's table; the counts come from its messages, so that golden data
    converted from elsewhere, without the statistics, has them too."""
    replies = [m for m in record["messages"] if m["role"] == "assistant"]
    return {"i": i, "href": f"{i}.html", "task": record["task"],
            "family": envs.task_family(record["env"], record["task"]), "won": record["success"],
            "score": round(100 * record["reward"], 1), "steps": len(replies),
            "errors": sum(bool(m.get("error")) for m in replies),
            "corrections": sum("reflection" in m for m in replies),
            "taken_back": sum(bool(m.get("taken_back")) for m in replies),
            "end": record.get("end_reason") or "", "kept": trained(record)}


def read_records(path):
    """The records of a file, validated (errors name file and line, data.load_trajectories)."""
    records = load_trajectories(path)
    for record in records:
        if record["env"] not in envs.ENVS:
            raise ValueError(f"{path}: trajectory {record['id']!r}: unknown env {record['env']!r} "
                             f"(the environments are {sorted(envs.ENVS)})")
    return records


def file_counts(rows):
    """The index's counts of one file."""
    kept = [r["kept"] for r in rows if r["kept"] is not None]
    trained = bool(kept)  # evaluation episodes have no teacher and are not trained on: "-"
    return {"trajectories": len(rows), "trained on": sum(kept) if trained else "-",
            "won": sum(r["won"] for r in rows),
            "judged wrong": sum(r["errors"] for r in rows) if trained else "-",
            "corrections": sum(r["corrections"] for r in rows) if trained else "-"}


# ----------------------------------------------------------------------------- pages

CSS = """
body { margin: 0 auto; max-width: 1180px; padding: 12px 28px 40px; color: #1f2328; background: #fff;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
a { color: #0b5cad; text-decoration: none; } a:hover { text-decoration: underline; }
nav { font-size: 13px; color: #59636e; margin: 4px 0 10px; } nav a { margin-right: 2px; }
h1 { font-size: 21px; margin: 6px 0 6px; font-weight: 600; word-break: break-word; }
h2 { font-size: 16px; margin: 26px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d1d9e0; font-weight: 600; }
h3 { font-size: 14px; margin: 18px 0 6px; font-weight: 600; }
p { margin: 6px 0; }
.muted { color: #59636e; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e9ee; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
td:first-child a { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
img.results { max-width: 100%; border: 1px solid #e5e9ee; margin: 8px 0; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0;
  font: 12.5px/1.5 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 4px 18px; margin: 8px 0; }
dl.facts div { border-left: 3px solid #e5e9ee; padding-left: 8px; }
dl.facts dt { font-size: 12px; color: #59636e; } dl.facts dd { margin: 0; font-weight: 600; }
.controls { display: flex; gap: 14px; align-items: center; margin: 8px 0; flex-wrap: wrap; }
select, button { font: inherit; padding: 2px 6px; }
#episodes th { cursor: pointer; user-select: none; }
#episodes th.up::after { content: " \\25B2"; font-size: 10px; }
#episodes th.down::after { content: " \\25BC"; font-size: 10px; }
#episodes tbody tr { cursor: pointer; } #episodes tbody tr:hover { background: #f3f7fc; }
.yes { color: #116329; font-weight: 600; } .no { color: #a40e26; }
.tabs { display: flex; gap: 4px; flex-wrap: wrap; border-bottom: 1px solid #d1d9e0; margin: 18px 0 12px; }
.tabs label { padding: 6px 12px; border: 1px solid transparent; border-bottom: none; border-radius: 6px 6px 0 0;
  cursor: pointer; color: #59636e; margin-bottom: -1px; }
.tabs label:hover { color: #1f2328; }
.tabs code { font-size: 12px; }
.obs, .sys { background: #f6f8fa; border-radius: 6px; padding: 7px 12px; margin: 8px 0; color: #3d444d; }
.obs .label, .card .label, .tm .who { font-size: 11.5px; text-transform: uppercase; letter-spacing: .04em;
  color: #59636e; }
.card { border: 1px solid #d1d9e0; border-left: 4px solid #8c959f; border-radius: 6px; padding: 7px 12px;
  margin: 8px 0 8px 28px; }
.card.wrong { border-left-color: #cf222e; background: #f6f6f7; color: #6e7781; }
.card.correction { border-left-color: #1a7f37; background: #f2fbf4; }
.card .row { display: grid; grid-template-columns: 86px 1fr; gap: 8px; margin-top: 2px; }
.card .row b { font-weight: 600; font-size: 12.5px; }
.card .action pre { font-weight: 600; }
.card .shown { margin-top: 5px; font-size: 12px; color: #59636e; }
.badge { display: inline-block; font-size: 11.5px; padding: 0 7px; border-radius: 10px; margin-left: 6px;
  text-transform: none; letter-spacing: 0; font-weight: 600; }
.badge.wrong { background: #ffebe9; color: #a40e26; } .badge.masked { background: #e5e7ea; color: #424a53; }
.badge.back { background: #fff1c2; color: #7d4e00; } .badge.fix { background: #d2f4d9; color: #116329; }
.end { margin: 14px 0; padding: 8px 12px; border-radius: 6px; background: #eef3fa; }
.tm { margin: 6px 0; }
.tm pre { padding: 6px 10px; border-radius: 6px; border: 1px solid #e5e9ee; }
pre.loss { background: #dcf5e2; border-color: #9fd8ad; color: #0f3d1c; }
pre.masked { background: #eceef0; border-color: #d6d9dc; color: #8c959f; }
pre.context { background: #fff; color: #3d444d; }
.legend span { display: inline-block; padding: 0 8px; margin-right: 8px; border-radius: 4px;
  border: 1px solid #e5e9ee; }
.legend .key-loss { background: #dcf5e2; color: #0f3d1c; } .legend .key-masked { background: #eceef0; color: #8c959f; }
"""


def tab_css():
    """The tabs of an episode page are radio buttons: the checked one shows its panel; a training
    view also shows only its own messages (those of class v-K, or shared by every view)."""
    rules = []
    for tab in ["turns", *map(str, range(len(TRAINING_VIEWS)))]:
        rules.append(f"#tab-{tab}:checked ~ .tabs label[for=tab-{tab}] {{ border-color: #d1d9e0; background: #fff; "
                     f"color: #1f2328; font-weight: 600; }}")
        rules.append(f"#tab-{tab}:checked ~ .panels > :not(.panel-{'turns' if tab == 'turns' else 'training'}) "
                     f"{{ display: none; }}")
        if tab != "turns":
            rules.append(f"#tab-{tab}:checked ~ .panels .v:not(.v-{tab}) {{ display: none; }}")
    return "\n".join(rules) + "\n"


CSS += tab_css()


def page(title, nav, body, script=""):
    """A whole page: no request leaves it (the Content-Security-Policy), `nav` is its breadcrumb."""
    crumbs = " › ".join(f'<a href="{esc(href)}">{esc(text)}</a>' if href else esc(text) for text, href in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="generator" content="{GENERATOR}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<nav>{crumbs}</nav>\n{body}\n'
            + (f"<script>{script}</script>\n" if script else "") + "</body></html>\n")


def table(head, rows, numeric=()):
    """An HTML table of escaped cells; a cell is text, or (text, href) for a link."""
    def cell(tag, i, value):
        n = ' class="n"' if i in numeric else ""
        text = f'<a href="{esc(value[1])}">{esc(value[0])}</a>' if isinstance(value, tuple) else esc(value)
        return f"<{tag}{n}>{text}</{tag}>"
    return ('<div class="wide"><table><thead><tr>' + "".join(cell("th", i, h) for i, h in enumerate(head))
            + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
            + "</tbody></table></div>")


def markdown_html(text):
    """results.md as HTML: its headings (one level down, below the page's title), paragraphs and
    tables, as report.markdown writes them."""
    out, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set(":-") and c for c in cells):  # the separator line below the head
                rows.append(cells)
            continue
        if rows:
            out.append(table(rows[0], rows[1:]))
            rows = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{esc(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{esc(line)}</p>")
    return "\n".join(out)


def index_page(title, results_md, png, files, counts):
    groups = list(dict.fromkeys(f.group for f in files))
    contents = [("results", "Results")] * (results_md is not None) + [(g or "files", group_title(g)) for g in groups]
    body = [f"<h1>{esc(title)}</h1>",
            '<p class="muted">' + " · ".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in contents) + "</p>"]
    if results_md is not None:
        body.append(f'<h2 id="results">Results (results.md)</h2>\n{markdown_html(results_md)}')
    if png is not None:
        body.append(f'<img class="results" alt="results.png: the scores with their intervals, and the training '
                    f'losses" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    head = ["file", "what it holds", *next(iter(counts.values()), {})]
    for group in groups:
        body.append(f'<h2 id="{esc(group or "files")}">{esc(group_title(group))}</h2>')
        rows = [[(f.name(), f"{f.folder}/index.html"), f.what, *counts[f.folder].values()]
                for f in files if f.group == group]
        body.append(table(head, rows, numeric=range(2, len(head))))
    return page(title, [("index", None)], "\n".join(body))


def group_title(group):
    return group.replace("seed-", "Seed ") if group else "Files"


OUTCOMES = [("", "all"), ("won", "won"), ("lost", "not won")]
TRAINED_OUTCOMES = [("kept", "trained on"), ("dropped", "not trained on")]


def file_page(file, rows):
    """A file's episodes: the table is drawn by the page's script from the rows embedded as JSON,
    a page of PAGE_SIZE rows at a time."""
    teacher = any(r["errors"] or r["corrections"] for r in rows)
    kept = any(r["kept"] is not None for r in rows)
    columns = [("i", "#"), ("task", "task"), ("family", "family"), ("won", "won"), ("score", "score"),
               ("steps", "steps")]
    columns += [("errors", "judged wrong"), ("corrections", "corrections"), ("taken_back", "taken back")] * teacher
    columns += [("end", "end")] + [("kept", "trained on")] * kept
    outcomes = OUTCOMES + TRAINED_OUTCOMES * kept
    counts = file_counts(rows)
    data = {"columns": columns, "rows": rows, "page_size": PAGE_SIZE}
    body = f"""<h1>{esc(file.title())}</h1>
<p class="muted">{esc(file.what)}: {", ".join(f"{esc(k)} {esc(v)}" for k, v in counts.items() if v != "-")}.</p>
<div class="controls">
<label>family <select id="family"><option value="">all</option></select></label>
<label>outcome <select id="outcome">{"".join(f'<option value="{v}">{t}</option>' for v, t in outcomes)}</select></label>
<button id="previous">‹ previous</button><span id="info"></span><button id="next">next ›</button>
<span class="muted">click a column to sort, a row to open its episode</span>
</div>
<noscript><p>The table needs JavaScript; the episodes' pages are 0.html to {len(rows) - 1}.html in this
folder.</p></noscript>
<table id="episodes"><thead><tr></tr></thead><tbody></tbody></table>
<script type="application/json" id="episodes-data">{script_json(data)}</script>"""
    return page(file.title(), [("index", f"{file.root()}index.html"), (file.title(), None)], body, FILE_SCRIPT)


# The file page's table: filter by family and outcome, sort by a column, a page at a time. Every
# value is set as text (textContent), never as HTML.
FILE_SCRIPT = """
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("episodes-data").textContent);
  const family = document.getElementById("family"), outcome = document.getElementById("outcome");
  const previous = document.getElementById("previous"), next = document.getElementById("next");
  const body = document.querySelector("#episodes tbody"), info = document.getElementById("info");
  const state = {sort: null, direction: 1, page: 0};
  for (const name of [...new Set(data.rows.map(r => r.family))].sort()) family.add(new Option(name, name));
  const head = document.querySelector("#episodes thead tr");
  for (const [key, label] of data.columns) {
    const th = document.createElement("th");
    th.textContent = label;
    th.dataset.key = key;
    th.addEventListener("click", () => {
      state.direction = state.sort === key ? -state.direction : 1;
      state.sort = key;
      state.page = 0;
      draw();
    });
    head.appendChild(th);
  }
  const outcomes = {won: r => r.won, lost: r => !r.won, kept: r => r.kept === true, dropped: r => r.kept === false};
  function shown() {
    const rows = data.rows.filter(r => (!family.value || r.family === family.value) &&
                                       (!outcome.value || outcomes[outcome.value](r)));
    if (state.sort !== null) {
      const k = state.sort;
      rows.sort((a, b) => (a[k] === b[k] ? a.i - b.i : (a[k] < b[k] ? -1 : 1) * state.direction));
    }
    return rows;
  }
  function cell(row, key) {
    const td = document.createElement("td"), value = row[key];
    if (key === "task") {
      const a = document.createElement("a");
      a.href = row.href;
      a.textContent = value;
      td.appendChild(a);
    } else if (typeof value === "boolean") {
      td.textContent = value ? "yes" : "no";
      td.className = value ? "yes" : "no";
    } else {
      td.textContent = value === null ? "" : String(value);
      if (typeof value === "number") td.className = "n";
    }
    return td;
  }
  function draw() {
    const rows = shown(), pages = Math.max(1, Math.ceil(rows.length / data.page_size));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * data.page_size, end = Math.min(start + data.page_size, rows.length);
    body.replaceChildren(...rows.slice(start, end).map(row => {
      const tr = document.createElement("tr");
      for (const [key] of data.columns) tr.appendChild(cell(row, key));
      tr.addEventListener("click", event => { if (event.target.tagName !== "A") location.href = row.href; });
      return tr;
    }));
    for (const th of head.children) {
      th.className = th.dataset.key !== state.sort ? "" : state.direction > 0 ? "up" : "down";
    }
    info.textContent = rows.length ? ` ${start + 1}-${end} of ${rows.length} ` : " no episode matches ";
    previous.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
  }
  family.addEventListener("change", () => { state.page = 0; draw(); });
  outcome.addEventListener("change", () => { state.page = 0; draw(); });
  previous.addEventListener("click", () => { state.page -= 1; draw(); });
  next.addEventListener("click", () => { state.page += 1; draw(); });
  draw();
})();
"""


# ----------------------------------------------------------------------------- an episode

def field_rows(fields):
    return "".join(f'<div class="row{" action" * (name == "Action")}"><b>{esc(name)}</b><pre>{esc(text)}</pre></div>'
                   for name, text in fields)


def step_card(message, n):
    """One assistant turn: its thought and action; a step the teacher judged wrong (greyed: it stays
    in the context without loss), whether it was taken back; a correction with its reflection."""
    if "reflection" in message:
        badges = '<span class="badge fix">the teacher\'s correction: trained</span>'
        fields = [("Reflection", message["reflection"]), ("Thought", message["thought"]), ("Action", message["action"])]
        return f'<div class="card correction"><div class="label">step {n}{badges}</div>{field_rows(fields)}</div>'
    thought, action = parse_thought(message["content"]), parse_action(message["content"])
    if action is not None and render_turn(action, thought) == message["content"].strip():
        fields = [(name, text) for name, text in [("Thought", thought), ("Action", action)] if text is not None]
    else:  # a reply that is more than its thought and action (or has no action: an invalid step), as written
        fields = [("Reply", message["content"])] + [("Action", action)] * (action is not None)
    badges = ""
    if message.get("error"):
        badges += '<span class="badge wrong">judged wrong by the teacher</span>'
        badges += '<span class="badge masked">in the context, no loss</span>' if not message["loss"] else ""
    if message.get("taken_back"):
        badges += '<span class="badge back">taken back in the environment</span>'
    kind = "wrong" if message.get("error") else ""
    return f'<div class="card {kind}"><div class="label">step {n}{badges}</div>{field_rows(fields)}' \
           f'{judged_facts(message.get("facts"))}</div>'


def judged_facts(facts):
    """What the teacher was shown about a judged step (rollout.RECORDED_FACTS), as one line."""
    if not facts:
        return ""
    said = [f"rejected by the environment: {yes_no(facts.get('rejected'))}",
            f"repeats an earlier step: {yes_no(facts.get('repeated'))}"]
    said += ["cannot be undone"] * bool(facts.get("irreversible"))
    if "plan_before" in facts and (facts["plan_before"] is not None or facts.get("plan_after") is not None):
        said.append(f"expert's plan {plan_size(facts['plan_before'])} before, "
                    f"{plan_size(facts.get('plan_after'))} after")
    said += [f"expert's next action {when}: {facts[key]}" for key, when in
             (("expert_before", "before"), ("expert_after", "after")) if facts.get(key)]
    return f'<div class="shown"><b>the teacher was shown</b> {esc("; ".join(said))}</div>'


def turns_panel(record):
    """The episode turn by turn: the task, each step with the observation it got."""
    parts, n, previous = [], 0, {}
    for m in record["messages"]:
        if m["role"] == "system":
            parts.append(f'<details class="sys"><summary>the system prompt</summary>'
                         f'<pre>{esc(m["content"])}</pre></details>')
        elif m["role"] == "user":
            label = "task" if n == 0 else "observation, then the step was taken back" if previous.get(
                "taken_back") else "observation"
            parts.append(f'<div class="obs"><div class="label">{label}</div><pre>{esc(m["content"])}</pre></div>')
        else:
            n += 1
            parts.append(step_card(m, n))
        previous = m
    end = record.get("end_reason")
    if end:
        outcome = "won" if record["success"] else "not won"
        parts.append(f'<div class="end">Ended after {n} steps: <b>{esc(END_REASONS.get(end, end))}</b> '
                     f'({esc(outcome)}, score {100 * record["reward"]:.1f}).</div>')
    return "\n".join(parts)


def message_kind(message):
    """How training treats a message: loss (labels on its tokens), masked (a step judged wrong that
    stays in the context without loss) or context."""
    return "loss" if message["loss"] else "masked" if message.get("error") else "context"


WHO = {"loss": "trained: carries the loss", "masked": "judged wrong: in the context, no loss", "context": "context"}


def training_views(record):
    """The messages as training encodes them under each of TRAINING_VIEWS: [(index, content, kind,
    the views that have it)], a message that differs between views once per distinct version."""
    views = [apply_variant(record, **arguments)["messages"] for _, arguments in TRAINING_VIEWS]
    out = []
    for i, message in enumerate(record["messages"]):
        versions = {}
        for k, messages in enumerate(views):
            versions.setdefault((messages[i]["content"], message_kind(messages[i])), []).append(k)
        out += [(i, content, kind, ks) for (content, kind), ks in versions.items()]
    return out


def training_panel(record, versions):
    parts = ['<p class="legend">' + "".join(f'<span class="key-{kind}">{text}</span>' for kind, text in WHO.items())
             + "</p>",
             '<p class="muted">The chat as training encodes it: data.apply_variant with the switch chosen above, '
             'then data.encode_pairs, which labels each trained reply with its end-of-turn token and nothing '
             'else. Pairs cut off by <code>--max-len</code> are not shown.</p>']
    for i, content, kind, views in versions:
        message = record["messages"][i]
        shown_in = "" if len(views) == len(TRAINING_VIEWS) else " v " + " ".join(f"v-{k}" for k in views)
        who = f"{message['role']} · {WHO[kind]}" + " (judged wrong)" * (kind == "loss" and message.get("error", False)) \
            + " · taken back in the environment" * message.get("taken_back", False)
        text = f'<pre class="{kind}">{esc(content)}</pre>'
        if message["role"] == "system":  # long, and the same in every episode: folded
            parts.append(f'<details class="tm{shown_in}"><summary class="who">{esc(who)}</summary>{text}</details>')
        else:
            parts.append(f'<div class="tm{shown_in}"><div class="who">{esc(who)}</div>{text}</div>')
    return "\n".join(parts)


def facts(record, row):
    values = [("env / split", f"{record['env']} / {record['split']}"), ("family", row["family"]),
              ("source", record["source"]), ("outcome", "won" if record["success"] else "not won"),
              ("score", f"{row['score']:.1f}"), ("steps", row["steps"])]
    if record["source"] == "reflected":
        values += [("judged wrong", row["errors"]), ("corrections", row["corrections"]),
                   ("taken back", row["taken_back"])]
        values += [(label, record[key]) for key, label in [("unjudged", "unjudged steps"),
                                                            ("teacher_calls", "teacher calls")] if key in record]
    if "invalid_actions" in record:
        values.append(("invalid actions", record["invalid_actions"]))
    if row["end"]:
        values.append(("end", END_REASONS.get(row["end"], row["end"])))
    if row["kept"] is not None:
        values.append(("trained on", "yes" if row["kept"] else "no: stage 2 keeps the episodes it won"))
    return '<dl class="facts">' + "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in values) + "</dl>"


def episode_page(file, record, row, count):
    i = row["i"]
    title = f"{record['task']} ({file.title()} #{i})"
    nav = [("index", f"{file.root()}index.html"), (file.title(), "index.html"), (f"#{i} {record['task']}", None)]
    links = [f'<a href="{i - 1}.html">‹ previous</a>' if i > 0 else "",
             f'<a href="{i + 1}.html">next ›</a>' if i + 1 < count else ""]
    body = (f"<h1>{esc(record['task'])}</h1>\n<p class=\"muted\">{esc(record['id'])} · {' '.join(links)}</p>\n"
            f"{facts(record, row)}\n")
    turns = f'<div class="panel-turns">{turns_panel(record)}</div>'
    if not row["kept"]:  # nothing trained: the turns alone
        return page(title, nav, body + f'<h2>Turn by turn</h2>\n{turns}')
    versions = training_views(record)
    tabs = [("turns", "Turn by turn")]
    if all(len(views) == len(TRAINING_VIEWS) for *_, views in versions):
        tabs.append(("0", "What training sees (the same under every switch)"))
    else:
        tabs += [(str(k), f"Trained: <code>{esc(name)}</code>") for k, (name, _) in enumerate(TRAINING_VIEWS)]
    radios = "".join(f'<input type="radio" name="tab" id="tab-{t}" hidden{" checked" * (t == "turns")}>'
                     for t, _ in tabs)
    labels = "".join(f'<label for="tab-{t}">{text}</label>' for t, text in tabs)
    body += (f'{radios}<div class="tabs">{labels}</div>\n<div class="panels">{turns}'
             f'<div class="panel-training">{training_panel(record, versions)}</div></div>')
    return page(title, nav, body)


# ----------------------------------------------------------------------------- the site

def check_replaceable(out):
    """`out` may be replaced: it does not exist, is empty, or is a site this module wrote."""
    if not out.exists() or out.is_dir() and not any(out.iterdir()):
        return
    index = out / "index.html"
    if not (index.is_file() and f'content="{GENERATOR}"' in index.read_text(encoding="utf-8", errors="replace")):
        raise ValueError(f"{out} exists and is not a site written by {GENERATOR}: give another --out")


def write_site(path, out):
    """The site of the records at `path` (a run or study folder, or one JSONL file) in the folder
    `out`: written whole into a folder beside it, then put in the place of the old site (nothing is
    left of it when a file is bad). Returns (files, episodes)."""
    path, out = Path(path), Path(out)
    files = record_files(path)
    results_md, png = (path / "results.md", path / "results.png") if path.is_dir() else (None, None)
    if not files and not (results_md and results_md.exists()):
        raise ValueError(f"{path}: no trajectory files (*.jsonl, seed-K/*.jsonl, seed-K/eval/*/*/episodes.jsonl) "
                         f"and no results.md")
    check_replaceable(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = {file.folder: write_file_pages(file, tmp / file.folder) for file in files}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    results = results_md.read_text(encoding="utf-8") if results_md and results_md.exists() else None
    title = f"STeP records: {path.name}"
    if results and results.startswith("# "):  # report.markdown's title: the setting, the seeds, the student
        title, results = results.split("\n", 1)[0][2:], results.split("\n", 1)[1]
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "index.html").write_text(index_page(title, results, png.read_bytes() if png and png.exists() else None,
                                               files, counts), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return len(files), sum(c["trajectories"] for c in counts.values())


def write_file_pages(file, folder):
    """A file's page and its episodes' pages into `folder`; returns the file's counts."""
    records = read_records(file.path)
    rows = [episode_row(i, record) for i, record in enumerate(records)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(file_page(file, rows), encoding="utf-8")
    for record, row in zip(records, rows):
        (folder / row["href"]).write_text(episode_page(file, record, row, len(records)), encoding="utf-8")
    return file_counts(rows)
