"""`step.py show`: the site's training view is what training encodes, every text is escaped, no page
asks for anything outside itself, and the pages open in a real browser (headless Chromium)."""
import base64
import http.server
import json
import re
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib import image

import show
import step
from data import build_samples, render_turn
from encoding import trained_runs
from model import train_tokenizer

REPO = Path(__file__).resolve().parent.parent

SYSTEM = "You are an agent in ScienceWorld. Reply with a Thought and an Action."
TASK = "Your task is to find a(n) non-living thing. First, focus on the thing."
STEP1 = "Thought: I look around first.\nAction: look around"
OBS1 = "This room is called the kitchen. In it, you see: a table, a lighter."
WRONG1 = "Thought: I open the door on my way.\nAction: open door to bedroom"
OBS2 = "No known action matches that input."
FIX1 = dict(reflection="Nothing here goes by that name.", thought="The table is a non-living thing.",
            action="focus on table")
OBS3 = "You focus on the table."
WRONG2 = "Thought: The lighter goes in the box.\nAction: focus on lighter"
OBS4 = "You focus on the lighter."
FIX2 = dict(reflection="Focusing on it fails the task.", thought="I move the table to the box.",
            action="move table to orange box")


FACTS1 = {"rejected": True, "repeated": False, "irreversible": False, "plan_before": 2, "plan_after": 2,
          "expert_before": "focus on table", "expert_after": "focus on table"}


def msg(role, content, loss=False, **fields):
    return {"role": role, "content": content, "loss": loss, **fields}


def record(messages, source, task="find-non-living-thing/3", **fields):
    replies = [m for m in messages if m["role"] == "assistant"]
    return {"id": f"sciworld/train/{task}", "env": "sciworld", "split": "train", "task": task, "source": source,
            "messages": messages, "reward": 1.0, "success": True, "steps": len(replies), "end_reason": "done",
            "errors": sum(bool(m.get("error")) for m in replies),
            "corrections": sum("reflection" in m for m in replies),
            "taken_back": sum(bool(m.get("taken_back")) for m in replies), "invalid_actions": 1, "unjudged": 0,
            "teacher_calls": 5, "teacher_latency_s": 0.1, **fields}


def reflected(**fields):
    """A stage-2 episode: a step, a wrong step and its correction, a wrong focus taken back and its correction."""
    return record([msg("system", SYSTEM), msg("user", TASK), msg("assistant", STEP1, True), msg("user", OBS1),
                   msg("assistant", WRONG1, False, error=True, facts=FACTS1), msg("user", OBS2),
                   msg("assistant", render_turn(**FIX1), True, **FIX1), msg("user", OBS3),
                   msg("assistant", WRONG2, False, error=True, taken_back=True), msg("user", OBS4),
                   msg("assistant", render_turn(**FIX2), True, **FIX2)], "reflected", **{"train": True, **fields})


def golden(task="find-non-living-thing/1"):
    return record([msg("system", SYSTEM), msg("user", TASK), msg("assistant", STEP1, True), msg("user", OBS1),
                   msg("assistant", "Thought: The table will do.\nAction: focus on table", True)], "golden", task)


REFLECTING = "Reflection: I was lost.\nThought: The table will do.\nAction: focus on table"


def evaluation(task="lifespan-longest-lived/7"):
    return record([msg("system", SYSTEM), msg("user", TASK), msg("assistant", STEP1, True), msg("user", OBS1),
                   msg("assistant", REFLECTING, True), msg("user", OBS3), msg("assistant", "I do not know.", True)],
                  "agent", task, reward=0.5, success=False, end_reason="invalid_actions")


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ----------------------------------------------------------------------------- reading the pages

class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find(self, keep):
        for c in self.children:
            if isinstance(c, Node):
                if keep(c):
                    yield c
                yield from c.find(keep)


class Tree(HTMLParser):
    """A page as a tree of Nodes, by the standard library's HTML parser."""
    VOID = {"meta", "input", "img", "br", "hr", "link"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = self.node = Node("document", {}, None)
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.node)
        self.node.children.append(node)
        if tag not in self.VOID:
            self.node = node

    def handle_startendtag(self, tag, attrs):
        self.node.children.append(Node(tag, attrs, self.node))

    def handle_endtag(self, tag):
        node = self.node
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.node = node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def parse(path):
    return Tree(Path(path).read_text(encoding="utf-8")).root


def facts(page):
    """The episode's facts, {name: value}."""
    pairs = page.find(lambda n: n.tag == "div" and n.parent.tag == "dl")
    return {pair.children[0].text(): pair.children[1].text() for pair in pairs}


def training_view(page, view):
    """{kind: [texts]} that the training view `view` (an index of show.TRAINING_VIEWS) shows: the
    messages shared by every view and those of that view (class v-K)."""
    shown = {"loss": [], "masked": [], "context": []}
    for tm in page.find(lambda n: "tm" in n.classes()):
        if "v" in tm.classes() and f"v-{view}" not in tm.classes():
            continue
        (pre,) = tm.find(lambda n: n.tag == "pre")
        (kind,) = pre.classes()
        shown[kind].append(pre.text())
    return shown


def trained_texts(tok, trajectory, arguments):
    """The text of each run of trained tokens in what build_samples encodes, as the tokenizer decodes it."""
    [(ids, labels)], _ = build_samples(tok, [trajectory], None, **arguments)
    runs = trained_runs(ids, labels)
    assert all(r[-1] == tok.eos_id for r in runs)  # each trained reply ends with its end of turn, trained too
    return [tok.decode(r[:-1]) for r in runs]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    episode = reflected()
    texts = [m["content"] for m in episode["messages"]] + ["Thought: " + FIX1["reflection"], "[INST] [/INST] <<SYS>>"]
    return train_tokenizer(texts * 5, tmp_path_factory.mktemp("tok") / "tokenizer.model", vocab_size=400)


# ----------------------------------------------------------------------------- the training view

CORRECTED1, CORRECTED2 = render_turn(**FIX1), render_turn(**FIX2)
PLAIN1, PLAIN2 = "Thought: The table is a non-living thing.\nAction: focus on table", \
    "Thought: I move the table to the box.\nAction: move table to orange box"
IN_THOUGHT1 = "Thought: Nothing here goes by that name. The table is a non-living thing.\nAction: focus on table"
IN_THOUGHT2 = "Thought: Focusing on it fails the task. I move the table to the box.\nAction: move table to orange box"
# Per training view (show.TRAINING_VIEWS): the trained replies and the masked ones.
EXPECTED_VIEWS = [
    ([STEP1, CORRECTED1, CORRECTED2], [WRONG1, WRONG2]),               # default
    ([STEP1, WRONG1, CORRECTED1, WRONG2, CORRECTED2], []),             # --no-mask-errors
    ([STEP1, PLAIN1, PLAIN2], [WRONG1, WRONG2]),                       # --no-reflection
    ([STEP1, IN_THOUGHT1, IN_THOUGHT2], [WRONG1, WRONG2]),             # --reflection-placement thought
]


def test_the_training_view_is_what_training_encodes(tmp_path, tok):
    """Each view's `loss` text is exactly the replies whose tokens build_samples labels under that
    switch, its `masked` text the steps judged wrong kept in the context; the rest is context."""
    episode = reflected()
    show.write_site(write_jsonl(tmp_path / "reflected.jsonl", [episode]), tmp_path / "site")
    page = parse(tmp_path / "site/reflected/0.html")
    assert [name for name, _ in show.TRAINING_VIEWS] == ["default", "--no-mask-errors", "--no-reflection",
                                                         "--reflection-placement thought"]
    for k, ((_, arguments), (loss, masked)) in enumerate(zip(show.TRAINING_VIEWS, EXPECTED_VIEWS)):
        view = training_view(page, k)
        assert view == {"loss": loss, "masked": masked, "context": [SYSTEM, TASK, OBS1, OBS2, OBS3, OBS4]}, k
        # The tokens training labels, decoded: the same replies (LLaMA-2's format ends each with a space).
        assert trained_texts(tok, episode, arguments) == [text + " " for text in loss]
    labels = [label.text() for label in page.find(lambda n: n.tag == "label")]
    assert labels == ["Turn by turn", "Trained: default", "Trained: --no-mask-errors", "Trained: --no-reflection",
                      "Trained: --reflection-placement thought"]


def test_golden_data_has_one_training_view_and_evaluation_episodes_none(tmp_path):
    write_jsonl(tmp_path / "run/seed-0/d1.jsonl", [golden()])
    write_jsonl(tmp_path / "run/seed-0/eval/step/dev/episodes.jsonl", [evaluation()])
    show.write_site(tmp_path / "run", tmp_path / "site")
    page = parse(tmp_path / "site/seed-0/d1/0.html")
    assert training_view(page, 0) == training_view(page, 3) == {
        "loss": [STEP1, "Thought: The table will do.\nAction: focus on table"], "masked": [],
        "context": [SYSTEM, TASK, OBS1]}
    assert [label.text() for label in page.find(lambda n: n.tag == "label")] == [
        "Turn by turn", "What training sees (the same under every switch)"]
    page = parse(tmp_path / "site/seed-0/eval/step/dev/episodes/0.html")
    assert list(page.find(lambda n: "tm" in n.classes() or n.tag == "label")) == []
    (end,) = page.find(lambda n: "end" in n.classes())
    assert end.text() == "Ended after 3 steps: too many invalid actions in a row (not won, score 50.0)."
    # A reply that is more than a thought and an action is shown as written, with the action it took.
    cards = [[row.text() for row in card.find(lambda n: "row" in n.classes())]
             for card in page.find(lambda n: "card" in n.classes())]
    assert cards == [["ThoughtI look around first.", "Actionlook around"],
                     ["Reply" + REFLECTING, "Actionfocus on table"], ["ReplyI do not know."]]


def test_turn_by_turn_shows_the_verdicts_reflections_and_corrections(tmp_path):
    show.write_site(write_jsonl(tmp_path / "reflected.jsonl", [reflected()]), tmp_path / "site")
    page = parse(tmp_path / "site/reflected/0.html")
    cards = [(c.classes(), [b.text() for b in c.find(lambda n: "badge" in n.classes())],
              [r.text() for r in c.find(lambda n: "row" in n.classes())])
             for c in page.find(lambda n: "card" in n.classes())]
    assert cards == [
        (["card"], [], ["ThoughtI look around first.", "Actionlook around"]),
        (["card", "wrong"], ["judged wrong by the teacher", "in the context, no loss"],
         ["ThoughtI open the door on my way.", "Actionopen door to bedroom"]),
        (["card", "correction"], ["the teacher's correction: trained"],
         ["ReflectionNothing here goes by that name.", "ThoughtThe table is a non-living thing.",
          "Actionfocus on table"]),
        (["card", "wrong"], ["judged wrong by the teacher", "in the context, no loss", "taken back in the environment"],
         ["ThoughtThe lighter goes in the box.", "Actionfocus on lighter"]),
        (["card", "correction"], ["the teacher's correction: trained"],
         ["ReflectionFocusing on it fails the task.", "ThoughtI move the table to the box.",
          "Actionmove table to orange box"])]
    assert [f.text() for f in page.find(lambda n: "shown" in n.classes())] == [
        "the teacher was shown rejected by the environment: yes; repeats an earlier step: no; expert's plan 2 actions "
        "before, 2 actions after; expert's next action before: focus on table; expert's next action after: focus on "
        "table"]
    observations = [o.text() for o in page.find(lambda n: "obs" in n.classes())]
    assert observations == ["task" + TASK, "observation" + OBS1, "observation" + OBS2, "observation" + OBS3,
                            "observation, then the step was taken back" + OBS4]
    assert facts(page) == {"env / split": "sciworld / train", "family": "find-non-living-thing", "source": "reflected",
                     "outcome": "won", "score": "100.0", "steps": "5", "judged wrong": "2", "corrections": "2",
                     "taken back": "1", "unjudged steps": "0", "teacher calls": "5", "invalid actions": "1",
                     "end": "the environment ended it", "trained on": "yes"}


# ----------------------------------------------------------------------------- index and file pages

def test_index_shows_the_results_and_each_seeds_files_with_their_counts(tmp_path):
    run = tmp_path / "run"
    write_jsonl(run / "seed-0/d1.jsonl", [golden(), golden("find-non-living-thing/2")])
    write_jsonl(run / "seed-0/reflected.jsonl", [reflected(), reflected(train=False, success=False, task="x/1")])
    write_jsonl(run / "seed-0/eval/step/dev/episodes.jsonl", [evaluation()])
    write_jsonl(run / "seed-10/u2_golden.jsonl", [golden()])
    write_jsonl(run / "seed-2/d1.jsonl", [golden()])
    (run / "seed-2/base").mkdir()
    write_jsonl(run / "seed-2/base/train_log.jsonl", [{"step": 1, "loss": 2.0}])  # not a trajectory file
    (run / "results.md").write_text("# STeP on sciworld: seeds 0, 2, 10\n\nThe text.\n\n| variant | score |\n"
                                    "|---|---|\n| step | 50.0 ± 1.0 |\n")
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJ"
                           "RU5ErkJggg==")  # one pixel
    (run / "results.png").write_bytes(png)
    assert show.write_site(run, tmp_path / "site") == (5, 7)
    page = parse(tmp_path / "site/index.html")
    assert [h.text() for h in page.find(lambda n: n.tag in ("h1", "h2"))] == [
        "STeP on sciworld: seeds 0, 2, 10", "Results (results.md)", "Seed 0", "Seed 2", "Seed 10"]
    tables = [[[cell.text() for cell in tr.find(lambda n: n.tag in ("td", "th"))]
               for tr in t.find(lambda n: n.tag == "tr")] for t in page.find(lambda n: n.tag == "table")]
    head = ["file", "what it holds", "trajectories", "trained on", "won", "judged wrong", "corrections"]
    assert tables == [
        [["variant", "score"], ["step", "50.0 ± 1.0"]],
        [head, ["d1.jsonl", show.STAGE_FILES["d1.jsonl"], "2", "2", "2", "0", "0"],
         ["reflected.jsonl", show.STAGE_FILES["reflected.jsonl"], "2", "1", "1", "4", "4"],
         ["eval/step/dev/episodes.jsonl", "evaluation of step on dev", "1", "-", "0", "-", "-"]],
        [head, ["d1.jsonl", show.STAGE_FILES["d1.jsonl"], "1", "1", "1", "0", "0"]],
        [head, ["u2_golden.jsonl", show.STAGE_FILES["u2_golden.jsonl"], "1", "1", "1", "0", "0"]]]
    links = [a.attrs["href"] for a in page.find(lambda n: n.tag == "a" and n.parent.tag == "td")]
    assert links == ["seed-0/d1/index.html", "seed-0/reflected/index.html", "seed-0/eval/step/dev/episodes/index.html",
                     "seed-2/d1/index.html", "seed-10/u2_golden/index.html"]
    assert all((tmp_path / "site" / link).is_file() for link in links)
    (img,) = page.find(lambda n: n.tag == "img")
    assert img.attrs["src"] == "data:image/png;base64," + base64.b64encode(png).decode()


def file_data(path):
    (data,) = parse(path).find(lambda n: n.attrs.get("id") == "episodes-data")
    return json.loads(data.text())


def test_a_files_page_holds_its_episodes_rows(tmp_path):
    episodes = [reflected(), reflected(train=False, success=False, reward=0.25, end_reason="max_steps",
                                       task="lifespan-shortest-lived/4")]
    show.write_site(write_jsonl(tmp_path / "reflected.jsonl", episodes), tmp_path / "site")
    data = file_data(tmp_path / "site/reflected/index.html")
    assert data["rows"] == [
        {"i": 0, "href": "0.html", "task": "find-non-living-thing/3", "family": "find-non-living-thing", "won": True,
         "score": 100.0, "steps": 5, "errors": 2, "corrections": 2, "taken_back": 1, "end": "done", "kept": True},
        {"i": 1, "href": "1.html", "task": "lifespan-shortest-lived/4", "family": "lifespan-shortest-lived",
         "won": False, "score": 25.0, "steps": 5, "errors": 2, "corrections": 2, "taken_back": 1, "end": "max_steps",
         "kept": False}]
    assert [key for key, _ in data["columns"]] == ["i", "task", "family", "won", "score", "steps", "errors",
                                                   "corrections", "taken_back", "end", "kept"]
    assert data["page_size"] == show.PAGE_SIZE
    page = parse(tmp_path / "site/reflected/1.html")
    assert not list(page.find(lambda n: "tm" in n.classes()))  # not trained on: no training view
    assert facts(page)["trained on"] == "no: stage 2 keeps the episodes it won"


# ----------------------------------------------------------------------------- hostile text, bad input

HOSTILE = ('</script><script>document.body.dataset.pwned = "script"</script><!-- '
           '<img src="http://127.0.0.1:{port}/img" onerror="document.body.dataset.pwned = \'img\'"> '
           '<a href="https://example.com/x">x</a> <style>@import url(http://127.0.0.1:{port}/css);</style>')


def hostile_site(tmp_path, port=9):
    text = HOSTILE.format(port=port)
    episode = reflected()
    episode["task"] = f"find-non-living-thing/{text}"
    for m in episode["messages"]:
        m["content"] = text + m["content"]
        for part in ("reflection", "thought"):
            if part in m:
                m[part] = text + m[part]
    run = tmp_path / "run"
    write_jsonl(run / "seed-0/reflected.jsonl", [episode])
    (run / "results.md").write_text(f"# {text}\n\n| {text} |\n|---|\n| {text} |\n")
    show.write_site(run, tmp_path / "site")
    return text, tmp_path / "site"


def test_text_from_models_is_shown_as_text(tmp_path):
    """A reply with <script>, <img onerror> or </script><!-- (also inside the JSON in a <script>)
    is text: the only scripts and images are the site's own."""
    text, site = hostile_site(tmp_path)
    for path in site.rglob("*.html"):
        page = parse(path)
        scripts = list(page.find(lambda n: n.tag == "script"))
        assert [s.attrs for s in scripts] == ([{"type": "application/json", "id": "episodes-data"}, {}]
                                              if path.name == "index.html" and path.parent != site else []), path
        assert not list(page.find(lambda n: n.tag == "img")), path
        assert not list(page.find(lambda n: any(a.startswith("on") for a in n.attrs))), path
        assert [s.text() for s in page.find(lambda n: n.tag == "style")] == [show.CSS], path
    raw = (site / "seed-0/reflected/index.html").read_text()
    json_text = raw.split('id="episodes-data">', 1)[1].split("</script>", 1)[0]
    assert "</" not in json_text and "<!--" not in json_text
    assert file_data(site / "seed-0/reflected/index.html")["rows"][0]["task"] == f"find-non-living-thing/{text}"
    page = parse(site / "seed-0/reflected/0.html")
    assert training_view(page, 0)["masked"] == [text + WRONG1, text + WRONG2]
    assert [h.text() for h in parse(site / "index.html").find(lambda n: n.tag == "h1")] == [text]


def test_no_page_refers_to_anything_outside_the_site(tmp_path):
    """Every page has the Content-Security-Policy, and every src and href is in the site or data:,
    even with addresses in the records' text."""
    _, site = hostile_site(tmp_path)
    pages = sorted(site.rglob("*"))
    assert [p.relative_to(site).as_posix() for p in pages] == [
        "index.html", "seed-0", "seed-0/reflected", "seed-0/reflected/0.html", "seed-0/reflected/index.html"]
    for path in (p for p in pages if p.is_file()):
        raw = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", raw, re.I), path
        page = parse(path)
        (csp,) = page.find(lambda n: n.attrs.get("http-equiv") == "Content-Security-Policy")
        assert csp.attrs["content"] == ("default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'; "
                                        "script-src 'unsafe-inline'")
        for node in page.find(lambda n: "src" in n.attrs or "href" in n.attrs):
            ref = node.attrs.get("src") or node.attrs["href"]
            assert ref.startswith("data:image/png;base64,") or re.fullmatch(r"(\.\./)*[\w./-]+\.html|#[\w-]+", ref), ref
            if not ref.startswith(("data:", "#")):
                assert (path.parent / ref).resolve().is_relative_to(site.resolve()) and (path.parent / ref).is_file()


def test_a_malformed_line_is_named_by_file_and_line(tmp_path):
    good = json.dumps(golden())
    for lines, error in [([good, '{"id": "broken'], r"bad\.jsonl:2: bad JSON"),
                         ([good, good, json.dumps({**golden(), "messages": None})],
                          r"bad\.jsonl:3: field 'messages': expected list"),
                         ([json.dumps({**golden(), "env": "mars"})], r"bad\.jsonl: trajectory .*: unknown env 'mars'")]:
        (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
        with pytest.raises(SystemExit, match=f"step.py show: error: .*{error}"):
            step.main(["show", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "site")])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # no site, nor half of one
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty: no trajectory files .* and no results.md"):
        step.main(["show", str(tmp_path / "empty"), "--out", str(tmp_path / "site")])


def test_a_site_replaces_its_own_folder_only(tmp_path):
    records = write_jsonl(tmp_path / "reflected.jsonl", [reflected(), reflected()])
    show.write_site(records, tmp_path / "site")
    write_jsonl(records, [reflected()])
    show.write_site(records, tmp_path / "site")  # the old site goes as a whole: no stale episode page
    assert sorted(p.name for p in (tmp_path / "site/reflected").iterdir()) == ["0.html", "index.html"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes exists and is not a site written by step.py show"):
        show.write_site(records, tmp_path / "notes")
    assert (tmp_path / "notes/todo.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- in a real browser

def chromium(tmp_path, *arguments, timeout=120):
    """Headless Chromium's output (Debian's `chromium` package, which .ci/run installs)."""
    executable = shutil.which("chromium")
    assert executable, "the browser tests need Chromium: apt-get install chromium (as .ci/run does)"
    return subprocess.run([executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", *arguments],
                          capture_output=True, text=True, timeout=timeout, check=True).stdout


def non_white_share(png):
    pixels = image.imread(png)[..., :3]
    return float((pixels.min(axis=-1) < 0.9).mean())


@pytest.mark.slow
def test_a_study_opens_in_chromium_from_disk(tmp_path):
    """The committed undo study's site: the index lists every seed's files, a file's table is drawn
    by its script, and a reflected trajectory's page shows its corrections and masked steps."""
    site = tmp_path / "site"
    step.main(["show", str(REPO / "docs/quick-smollm2-undo"), "--out", str(site)])
    index = Tree(chromium(tmp_path, "--dump-dom", (site / "index.html").as_uri())).root
    assert [h.text() for h in index.find(lambda n: n.tag == "h2")] == [
        "Results (results.md)", "Seed 0", "Seed 1", "Seed 2"]
    links = [a.attrs["href"] for a in index.find(lambda n: n.tag == "a" and n.parent.tag == "td")]
    assert len(links) == 39 and "seed-2/reflected/index.html" in links
    table = Tree(chromium(tmp_path, "--dump-dom", (site / "seed-0/reflected/index.html").as_uri())).root
    rows = list(table.find(lambda n: n.tag == "tr" and n.parent.tag == "tbody"))
    assert len(rows) == 80 and [td.text() for td in rows[2].find(lambda n: n.tag == "td")][:3] == [
        "2", "lifespan-longest-lived/33", "lifespan-longest-lived"]
    (info,) = table.find(lambda n: n.attrs.get("id") == "info")
    assert info.text().strip() == "1-80 of 80"
    page = Tree(chromium(tmp_path, "--dump-dom", (site / "seed-0/reflected/2.html").as_uri())).root
    badges = [b.text() for b in page.find(lambda n: "badge" in n.classes())]
    assert badges.count("judged wrong by the teacher") == 3 and badges.count("taken back in the environment") == 1
    assert training_view(page, 0)["masked"] == training_view(page, 2)["masked"] != []
    for name, path in [("index", "index.html"), ("table", "seed-0/reflected/index.html"),
                       ("episode", "seed-0/reflected/2.html")]:
        chromium(tmp_path, f"--screenshot={tmp_path / name}.png", "--window-size=1400,1000", (site / path).as_uri())
        assert non_white_share(tmp_path / f"{name}.png") > 0.03, name


@pytest.mark.slow
def test_hostile_text_runs_nothing_and_requests_nothing_in_chromium(tmp_path):
    """The hostile pages, loaded in Chromium: no script of the text ran, and a server on loopback
    named in the text (as an image, a style, a link) got no request."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        text, site = hostile_site(tmp_path, port=server.server_address[1])
        for path in ["index.html", "seed-0/reflected/index.html", "seed-0/reflected/0.html"]:
            dom = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=2000", (site / path).as_uri())
            page = Tree(dom).root
            (body,) = page.find(lambda n: n.tag == "body")
            assert "data-pwned" not in body.attrs, path
            assert text in page.text(), path
        assert requests == []
    finally:
        server.shutdown()


@pytest.mark.slow
def test_a_file_of_3000_episodes_opens_quickly(tmp_path):
    """A page of PAGE_SIZE rows at once: a file of 3000 episodes is written and drawn in seconds."""
    episodes = [reflected(task=f"find-non-living-thing/{i}", success=i % 3 > 0) for i in range(3000)]
    records = write_jsonl(tmp_path / "reflected.jsonl", episodes)
    start = time.perf_counter()
    show.write_site(records, tmp_path / "site")
    written = time.perf_counter() - start
    start = time.perf_counter()
    page = Tree(chromium(tmp_path, "--dump-dom", (tmp_path / "site/reflected/index.html").as_uri())).root
    loaded = time.perf_counter() - start
    print(f"3000 episodes: site written in {written:.1f} s, the file's page loaded by Chromium in {loaded:.1f} s")
    rows = list(page.find(lambda n: n.tag == "tr" and n.parent.tag == "tbody"))
    assert len(rows) == show.PAGE_SIZE == 100
    (info,) = page.find(lambda n: n.attrs.get("id") == "info")
    assert info.text().strip() == "1-100 of 3000"
    assert written < 60 and loaded < 20
