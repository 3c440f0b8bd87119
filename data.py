"""Trajectories: loading, validation, ETO conversion, LLaMA-2 chat encoding with partial masking,
length-grouped batching; and the teacher of stage 2: its prompt, an OpenAI-compatible client, and
a scripted oracle teacher serving the same API.

Data flows one way: trajectory dicts -> (token ids, labels) -> padded batches. Labels are aligned
with the ids (label i is id i when trained, IGNORE_INDEX when not); the loss shifts them."""
import copy
import email.utils
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
SOURCES = ("golden", "reflected", "agent")
FIELDS = {"id": str, "env": str, "task": str, "split": str, "source": str, "messages": list,
          "reward": (int, float), "success": bool}
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


def render_turn(action, thought=None, reflection=None):
    """The one place an assistant turn is formatted from its parts; absent parts are left out."""
    parts = [("Reflection", reflection), ("Thought", thought), ("Action", action)]
    return "\n".join(f"{name}: {text}" for name, text in parts if text is not None)


# ----------------------------------------------------------------------------- JSONL files

def append_jsonl(path, record):
    """Append one line, flushed and fsynced: a killed writer loses at most the line it was writing."""
    end_torn_line(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")  # ASCII only, so a torn line never splits a character
        f.flush()
        os.fsync(f.fileno())


def end_torn_line(path):
    """A last line without newline is cut if it is a killed writer's fragment (appending would
    glue the next record to it), else finished with a newline."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
            f.write(b"\n")
        except ValueError:
            log.warning("%s: cutting a torn last line (%d bytes) before appending", path, len(data) - start)
            f.truncate(start)


def jsonl_lines(path, torn_ok):
    """(line number, record) for every non-blank line; ValueError naming file:line on bad JSON.
    With torn_ok, an unparseable last line without newline (a killed writer) is skipped."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            if torn_ok and n == len(lines):
                log.warning("%s:%d: skipping a torn last line (a writer was killed mid-line)", path, n)
                return
            raise ValueError(f"{path}:{n}: bad JSON: {e}") from None


def read_jsonl(path):
    return [record for _, record in jsonl_lines(path, torn_ok=True)]


# ----------------------------------------------------------------------------- validation

def validate_trajectory(traj):
    """Raise ValueError saying what is wrong with a trajectory dict."""
    if not isinstance(traj, dict):
        raise ValueError(f"expected a JSON object, got {type(traj).__name__}")
    for field, kind in FIELDS.items():
        if field not in traj:
            raise ValueError(f"missing field {field!r}")
        if not isinstance(traj[field], kind) or kind != bool and isinstance(traj[field], bool):
            raise ValueError(f"field {field!r}: expected {getattr(kind, '__name__', 'a number')}, "
                             f"got {traj[field]!r:.80}")
    if traj["source"] not in SOURCES:
        raise ValueError(f"field 'source': expected one of {SOURCES}, got {traj['source']!r}")
    messages = traj["messages"]
    for i, m in enumerate(messages):
        validate_message(m, f"messages[{i}]")
    validate_roles([m["role"] for m in messages])


def validate_message(m, where):
    if not isinstance(m, dict):
        raise ValueError(f"{where}: expected an object, got {m!r:.80}")
    kinds = {"role": str, "content": str, "loss": bool, "error": bool,
             "reflection": str, "thought": str, "action": str}
    for field in ("role", "content", "loss"):
        if field not in m:
            raise ValueError(f"{where}: missing field {field!r}")
    for field, kind in kinds.items():
        if field in m and not isinstance(m[field], kind):
            raise ValueError(f"{where}.{field}: expected {kind.__name__}, got {m[field]!r:.80}")
    if m["role"] not in ("system", "user", "assistant"):
        raise ValueError(f"{where}.role: expected system, user or assistant, got {m['role']!r}")
    if m["loss"] and m["role"] != "assistant":
        raise ValueError(f"{where}.loss: only assistant messages are trained, this is a {m['role']} message")
    if "reflection" in m and not {"thought", "action"} <= set(m):
        raise ValueError(f"{where}: a corrected turn needs 'thought' and 'action' besides 'reflection'")


def validate_roles(roles):
    """Optional system, then user/assistant alternating, ending on assistant."""
    start = 1 if roles[:1] == ["system"] else 0
    for i, role in enumerate(roles[start:], start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"messages[{i}].role: expected {expected} (optional system, then user and "
                             f"assistant alternating), got {role!r}")
    if len(roles) == start or roles[-1] != "assistant":
        raise ValueError(f"messages: a trajectory ends on an assistant message, this one ends on "
                         f"{roles[-1] if roles else 'nothing'!r}")


def marked_for_training(record):
    """Synthesis writes every episode and marks the successful ones `"train": true`; others (golden
    data) carry no mark and are trained on."""
    return record.get("train", True) is not False


def load_trajectories(path, keep=lambda record: True):
    """The trajectories of a JSONL file that `keep` accepts, each validated; ValueError naming
    file:line and the problem."""
    trajectories = []
    for n, record in jsonl_lines(path, torn_ok=False):
        if not keep(record):
            continue
        try:
            validate_trajectory(record)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
        trajectories.append(record)
    return trajectories


# ----------------------------------------------------------------------------- ETO / ShareGPT

ETO_ROLES = {"human": "user", "gpt": "assistant"}


def eto_to_trajectory(record, env):
    if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("conversations"), list):
        raise ValueError("expected an object with 'id' and a list 'conversations'")
    messages = []
    for i, turn in enumerate(record["conversations"]):
        if not isinstance(turn, dict) or turn.get("from") not in ETO_ROLES or not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{i}]: expected {{'from': 'human' | 'gpt', 'value': str}}, got {turn!r:.80}")
        role = ETO_ROLES[turn["from"]]
        messages.append({"role": role, "content": turn["value"], "loss": role == "assistant"})
    traj = {"id": str(record["id"]), "env": env, "task": str(record["id"]), "split": "train",
            "source": "golden", "messages": messages, "reward": 1.0, "success": True}
    validate_trajectory(traj)
    return traj


def convert_eto(records, env, where=None):
    """ETO's golden trajectories ({"id", "conversations": [{"from", "value"}]}) in our format.
    `where` names each record in errors (default: its index)."""
    out = []
    for i, record in enumerate(records):
        try:
            out.append(eto_to_trajectory(record, env))
        except ValueError as e:
            raise ValueError(f"{where[i] if where else f'ETO record {i}'}: {e}") from None
    return out


def load_eto(path, env):
    """An ETO file, a JSON list (as ETO ships it) or JSONL, converted; errors name file and line."""
    with open(path, "rb") as f:
        is_list = f.read().lstrip()[:1] == b"["
    if not is_list:
        located = list(jsonl_lines(path, torn_ok=False))
        return convert_eto([r for _, r in located], env, [f"{path}:{n}" for n, _ in located])
    with open(path, encoding="utf-8") as f:
        try:
            records = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: bad JSON: {e}") from None
    return convert_eto(records, env, [f"{path}: record {i}" for i in range(len(records))])


# ----------------------------------------------------------------------------- chat encoding

def dialog_turns(messages):
    """[(user text, assistant message or None)] with the system message folded into the first user
    message, as Meta's LLaMA-2 chat format does."""
    roles = [m["role"] for m in messages]
    if roles[:2] == ["system", "user"]:
        first = B_SYS + messages[0]["content"] + E_SYS + messages[1]["content"]
        messages = [{"role": "user", "content": first}] + list(messages[2:])
    if not messages or any(m["role"] != ("user", "assistant")[i % 2] for i, m in enumerate(messages)):
        raise ValueError(f"expected an optional system message, then user and assistant messages "
                         f"alternating; got roles {roles}")
    return [(messages[i]["content"], messages[i + 1] if i + 1 < len(messages) else None)
            for i in range(0, len(messages), 2)]


def encode_user(tok, user):
    return tok.encode(f"{B_INST} {user.strip()} {E_INST}", bos=True)


def encode_pair(tok, user, reply, loss):
    """Ids and labels of one [BOS] [INST] user [/INST] assistant [EOS] pair. The user part is
    encoded on its own and must be a prefix of the pair, or training and inference would see
    different tokens for the same prompt."""
    prompt = encode_user(tok, user)
    ids = tok.encode(f"{B_INST} {user.strip()} {E_INST} {reply.strip()} ", bos=True, eos=True)
    if ids[:len(prompt)] != prompt:
        raise ValueError(f"the tokenizer merges tokens across {E_INST!r}: the prompt's tokens are not a "
                         f"prefix of the pair's tokens (user {user[-60:]!r})")
    answer = ids[len(prompt):]
    return ids, [IGNORE_INDEX] * len(prompt) + (answer if loss else [IGNORE_INDEX] * len(answer))


def encode_pairs(tok, messages):
    turns = dialog_turns(messages)
    if turns[-1][1] is None:
        raise ValueError("the messages end on a user message: nothing to train (encode_prompt is for inference)")
    return [encode_pair(tok, user, a["content"], a["loss"]) for user, a in turns]


def pairs_that_fit(pairs, max_len):
    total, n = 0, 0
    for ids, _ in pairs:
        total += len(ids)
        if max_len is not None and total > max_len:
            break
        n += 1
    return n


def join_pairs(pairs):
    return [i for ids, _ in pairs for i in ids], [label for _, labels in pairs for label in labels]


def encode_chat(tok, messages, max_len=None):
    """(ids, labels) in LLaMA-2 chat format; with max_len, the longest prefix of whole pairs that fits."""
    pairs = encode_pairs(tok, messages)
    return join_pairs(pairs[:pairs_that_fit(pairs, max_len)])


def encode_prompt(tok, messages):
    """The ids the model sees before it replies to the last (user) message."""
    *history, (user, last) = dialog_turns(messages)
    if last is not None:
        raise ValueError("encode_prompt: the messages must end on a user message")
    return [i for u, a in history for i in encode_pair(tok, u, a["content"], False)[0]] + encode_user(tok, user)


# ----------------------------------------------------------------------------- training samples

def apply_variant(traj, mask_errors=True, reflection=True):
    """What is trained of a stored trajectory: error steps masked or not, corrections with or
    without their reflection. Golden trajectories pass through unchanged. Returns a new dict."""
    out = copy.deepcopy(traj)
    if out["source"] == "golden":
        return out
    for m in out["messages"]:
        if m.get("error"):
            m["loss"] = not mask_errors
        if not reflection and "reflection" in m:
            m["content"] = render_turn(m["action"], m["thought"])
            del m["reflection"]
    return out


def build_samples(tok, trajectories, max_len, mask_errors=True, reflection=True):
    """(ids, labels) per trajectory, with what was truncated (at a pair boundary) or dropped."""
    samples, truncated, drops = [], 0, Counter()
    for traj in tqdm(trajectories, desc="encoding", unit="traj", leave=False):
        try:
            pairs = encode_pairs(tok, apply_variant(traj, mask_errors, reflection)["messages"])
        except ValueError as e:
            raise ValueError(f"trajectory {traj.get('id')!r}: {e}") from None
        kept = pairs_that_fit(pairs, max_len)
        ids, labels = join_pairs(pairs[:kept])
        if kept == 0:
            drops["first pair longer than max_len"] += 1
        elif all(label == IGNORE_INDEX for label in labels):
            drops["no trainable token" + " within max_len" * (kept < len(pairs))] += 1
        else:
            truncated += kept < len(pairs)
            samples.append((ids, labels))
    stats = {"trajectories": len(trajectories), "samples": len(samples), "truncated": truncated,
             "dropped": sum(drops.values()), "drop_reasons": dict(drops),
             "tokens": sum(len(ids) for ids, _ in samples),
             "trainable_tokens": sum(label != IGNORE_INDEX for _, labels in samples for label in labels)}
    if truncated or drops:
        log.warning("%d of %d trajectories truncated at a pair boundary to max_len %s; %d dropped %s",
                    truncated, len(trajectories), max_len, stats["dropped"], dict(drops))
    return samples, stats


# ----------------------------------------------------------------------------- batching

def length_grouped_batches(lengths, batch_tokens, seed, max_padding=0.04):
    """Batches of sample indices, len(batch) * longest <= batch_tokens (a longer sample goes alone).

    Samples are taken in length order (ties at random) and a batch is closed early rather than let
    its padding pass max_padding, so the padding fraction stays below it whatever the budget.
    Batch order is shuffled with `seed`."""
    rng = random.Random(seed)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, batch, real = [], [], 0
    for i in order:  # ascending, so sample i would be the batch's longest
        padded = (len(batch) + 1) * lengths[i]
        if batch and (padded > batch_tokens or padded - real - lengths[i] > max_padding * padded):
            batches.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def padding_fraction(batches, lengths):
    """Padding tokens / all tokens of the padded batches."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / padded if padded else 0.0


def collate(samples, pad_id=0):
    """[(ids, labels)] -> right-padded LongTensors [B, T]; labels IGNORE_INDEX on padding."""
    T = max(len(ids) for ids, _ in samples)
    ids = torch.full((len(samples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), T), IGNORE_INDEX, dtype=torch.long)
    for b, (sample_ids, sample_labels) in enumerate(samples):
        ids[b, :len(sample_ids)] = torch.tensor(sample_ids, dtype=torch.long)
        labels[b, :len(sample_labels)] = torch.tensor(sample_labels, dtype=torch.long)
    return ids, labels


# ----------------------------------------------------------------------------- the teacher: prompt and verdict

TEACHER_SYSTEM = """\
You supervise an AI agent that acts in a text environment. After each step of the agent you \
decide whether that step was a sensible move towards finishing the task. A reference, when one \
is given, shows one way to succeed; other ways can be right too. The expert's next action after \
the agent's step, when given, is a good corrected action.
Answer with a single JSON object and nothing else. If the step is fine:
{"verdict": "correct"}
If it is not:
{"verdict": "wrong", "reflection": "...", "thought": "...", "action": "..."}
where the reflection says briefly, in the agent's own voice, what went wrong and why, and \
thought and action are what the agent should think and do next, from the state after its step \
(the action: one command the environment understands)."""

STEP_HEADER = "## The agent's latest step"
REFERENCE_HEADER = "## Reference"
EXPERT_BEFORE = "Expert's next action before the agent's step: "
EXPERT_AFTER = "Expert's next action after the agent's step: "
REFERENCES = ("expert", "golden", "none")


def one_line(text):
    return " ".join(str(text).split())


def render_history(messages, task=""):
    """Messages as 'Agent:'/'Environment:' lines; the system prompt and a repeat of the task are
    left out because the prompt states them once already."""
    msgs = [m for m in messages if m["role"] != "system"]
    if msgs and msgs[0]["role"] == "user" and msgs[0]["content"].strip() == task.strip():
        msgs = msgs[1:]
    who = {"user": "Environment", "assistant": "Agent"}
    return "\n".join(f"{who[m['role']]}: {m['content']}" for m in msgs) or "(nothing yet)"


def render_reference(step, reference, golden):
    lines = []
    if reference == "expert":
        for prefix, key in ((EXPERT_BEFORE, "expert_before"), (EXPERT_AFTER, "expert_after")):
            if step.get(key):
                lines.append(prefix + one_line(step[key]))
    if golden and reference != "none":
        lines += ["Golden trajectory of this task:", render_history(golden)]
    return "\n".join(lines) or "(none: judge from the task and the history)"


def teacher_prompt(step, reference="expert", golden=None):
    """Chat messages asking the teacher for a verdict on `step` (the run_episodes judge dict).
    reference: "expert" (expert's next action before/after the step), "golden" (the task's golden
    trajectory, a list of messages in `golden`), "none". The reference section comes last and
    its expert lines have fixed prefixes: the oracle teacher reads them from there."""
    if reference not in REFERENCES:
        raise ValueError(f"teacher reference must be one of {REFERENCES}, got {reference!r}")
    latest = [f"Thought: {one_line(step['thought'])}"] if step.get("thought") else []
    if step.get("action") is not None:
        latest.append(f"Action: {one_line(step['action'])}")
    else:
        latest.append(f"Reply (no action could be parsed): {one_line(step['reply'])}")
    latest.append(f"Observation: {step['observation']}")
    user = "\n\n".join([
        f"## Environment instruction\n{step['instruction']}",
        f"## Task\n{step['task']}",
        f"## History\n{render_history(step['history'], step['task'])}",
        STEP_HEADER + "\n" + "\n".join(latest),
        REFERENCE_HEADER + "\n" + render_reference(step, reference, golden),
        "Judge the agent's latest step. Answer with the JSON object only."])
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text):
    """The first JSON object with a "verdict" in `text` (fences and prose around it are fine), as
    {"verdict": "correct"} or {"verdict": "wrong", "reflection", "thought", "action"}; None when
    there is none or a "wrong" lacks a field."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text or "")):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "verdict" in obj:
            return normalise_verdict(obj)
    return None


def normalise_verdict(obj):
    verdict = str(obj["verdict"]).strip().lower()
    if verdict == "correct":
        return {"verdict": "correct"}
    fields = {k: one_line(obj.get(k) or "") for k in ("reflection", "thought", "action")}
    if verdict != "wrong" or not all(fields.values()):
        return None
    return {"verdict": "wrong", **fields}

# ----------------------------------------------------------------------------- the client

# Failures of the network or the server, worth a retry (a bad URL is not among them).
NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class TeacherError(RuntimeError):
    """The teacher could not be reached or answered garbage after all retries."""

    def __init__(self, message, calls=0):
        super().__init__(message)
        self.calls = calls


class TeacherClient:
    """A chat-completions client with timeouts, bounded retries (exponential backoff with jitter,
    Retry-After honoured on 429/503) and at most `max_in_flight` requests at once across all
    threads. The key comes from STEP_TEACHER_API_KEY or OPENAI_API_KEY and is never logged."""

    def __init__(self, base_url, model, *, timeout=60.0, max_retries=4, parse_retries=2,
                 backoff_s=1.0, max_wait_s=60.0, max_in_flight=8, temperature=0.0,
                 max_tokens=512, sleep=time.sleep):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_retries = model, timeout, max_retries
        self.parse_retries, self.temperature, self.max_tokens = parse_retries, temperature, max_tokens
        self.backoff_s, self.max_wait_s, self.sleep = backoff_s, max_wait_s, sleep
        self._key = os.environ.get("STEP_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._local = threading.local()  # one requests.Session per thread: Session is not thread-safe

    def __repr__(self):
        return f"TeacherClient({self.url!r}, model={self.model!r})"

    def _session(self):
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            if self._key:
                self._local.session.headers["Authorization"] = f"Bearer {self._key}"
        return self._local.session

    def _redact(self, text):
        return text.replace(self._key, "***") if self._key else text

    def _post(self, messages, temperature):
        """One request: (content, None) on success, (None, (why, retry_after_s)) on a failure
        worth retrying; TeacherError on one that retrying cannot fix (bad key, bad model...)."""
        body = {"model": self.model, "messages": messages,
                "temperature": temperature, "max_tokens": self.max_tokens}
        try:
            with self._slots:
                r = self._session().post(self.url, json=body, timeout=self.timeout)
        except NETWORK_ERRORS as e:
            return None, (f"{type(e).__name__}: {e}", None)
        if r.status_code in (408, 429) or r.status_code >= 500:
            return None, (f"HTTP {r.status_code}", parse_retry_after(r.headers.get("Retry-After")))
        if r.status_code != 200:
            raise TeacherError(self._redact(f"teacher {self.url}: HTTP {r.status_code}: {r.text[:300]}"))
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            return None, (f"malformed response body {r.text[:100]!r}", None)
        return content, None

    def _complete(self, messages, temperature):
        """(content, number of HTTP requests made); TeacherError when the retries run out."""
        for attempt in range(self.max_retries + 1):
            try:
                content, failure = self._post(messages, temperature)
            except TeacherError as e:
                e.calls = attempt + 1
                raise
            if content is not None:
                return content, attempt + 1
            if attempt < self.max_retries:
                wait = self._wait_s(attempt, failure[1])
                log.warning("teacher %s: %s (attempt %d of %d), retrying in %.2f s", self.url,
                            self._redact(failure[0]), attempt + 1, self.max_retries + 1, wait)
                self.sleep(wait)
        raise TeacherError(self._redact(f"teacher {self.url}: no answer after {attempt + 1} "
                                        f"attempts; last failure: {failure[0]}"), attempt + 1)

    def _wait_s(self, attempt, retry_after):
        if retry_after is not None:  # the server knows best, within reason
            return min(retry_after, self.max_wait_s)
        return min(self.max_wait_s, self.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)

    def complete(self, messages):
        """The assistant's reply text to `messages`; TeacherError when the retries run out."""
        return self._complete(messages, self.temperature)[0]

    def judge(self, step, reference="expert", golden=None):
        """The verdict on one agent step, per the run_episodes judge contract, plus "calls" (HTTP
        requests made) and "latency_s". A teacher that fails or keeps answering garbage gives
        {"verdict": "unjudged", "reason": ...}: the step is counted, never lost."""
        t0, calls = time.monotonic(), 0
        messages = teacher_prompt(step, reference, golden)
        for attempt in range(self.parse_retries + 1):
            # A greedy teacher would repeat the same garbage: sample when asking again.
            temperature = self.temperature if attempt == 0 else max(self.temperature, 0.7)
            try:
                text, n = self._complete(messages, temperature)
            except TeacherError as e:
                calls += e.calls
                result = {"verdict": "unjudged", "reason": str(e)}
                break
            calls += n
            result = parse_verdict(text) or {"verdict": "unjudged",
                                             "reason": f"unparseable verdict: {text[:200]!r}"}
            if result["verdict"] != "unjudged":
                break
        if result["verdict"] == "wrong":
            result["content"] = render_turn(result["action"], result["thought"], result["reflection"])
        return {**result, "calls": calls, "latency_s": round(time.monotonic() - t0, 3)}


def parse_retry_after(value):
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None

# ----------------------------------------------------------------------------- the oracle teacher


def section(prompt, header, end=None):
    """The text after the last `header` line (up to the last `end` line): the sections the
    prompt builds last, so text inside the history cannot pose as them."""
    start = prompt.rfind("\n" + header + "\n")
    stop = prompt.rfind("\n" + end + "\n") if end else -1
    if start < 0:
        return ""
    return prompt[start + len(header) + 2: stop if stop > start else None]


def find_line(text, prefix):
    m = re.search("^" + re.escape(prefix) + "(.*)$", text, re.M)
    return m.group(1).strip() if m else None


def norm_action(action):
    return " ".join(action.lower().split())


def oracle_verdict(prompt):
    """The scripted teacher: "correct" when the agent did the expert's next action (or when there
    is no expert reference to judge by), else "wrong" with the expert's action after the step."""
    reference = section(prompt, REFERENCE_HEADER)
    expert_before = find_line(reference, EXPERT_BEFORE)
    expert_after = find_line(reference, EXPERT_AFTER)
    latest = section(prompt, STEP_HEADER, REFERENCE_HEADER)
    action = find_line(latest, "Action: ")
    if not (expert_before and expert_after):
        return {"verdict": "correct"}  # nothing to judge by
    if action and norm_action(action) == norm_action(expert_before):
        return {"verdict": "correct"}
    observation = latest.partition("\nObservation: ")[2].strip()
    if action is None:
        reflection = f"My reply had no action; the next step is '{expert_after}'."
    elif observation and "\n" not in observation and len(observation) <= 80:  # likely a rejection
        reflection = (f"I did '{action}' and got '{observation}', which does not advance the task; "
                      f"the next step is '{expert_after}'.")
    else:
        reflection = (f"I did '{action}', which does not advance the task; "
                      f"the next step is '{expert_after}'.")
    return {"verdict": "wrong", "reflection": reflection, "thought": f"I will {expert_after} now.",
            "action": expert_after}


class JSONHandler(BaseHTTPRequestHandler):
    """A quiet HTTP handler answering JSON (the oracle teacher; the tests' fixture servers)."""
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections

    def log_message(self, *args):  # one line per request would drown the episode logs
        pass

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OracleHandler(JSONHandler):

    def do_GET(self):
        if self.path.rstrip("/") in ("/health", "/models", "/v1/models"):
            self.send_json(200, {"object": "list", "data": [{"id": "oracle", "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self.send_json(404, {"error": {"message": f"no route {self.path}"}})
        try:
            request = json.loads(body)
            prompt = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
        except (ValueError, KeyError, IndexError, TypeError):
            return self.send_json(400, {"error": {"message": "expected a chat completions request"}})
        time.sleep(self.server.delay_s)
        answer = json.dumps(oracle_verdict(prompt))
        n_in, n_out = len(prompt.split()), len(answer.split())  # words, as a rough token count
        self.send_json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
            "created": int(time.time()), "model": request.get("model", "oracle"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}})


class OracleServer(ThreadingHTTPServer):
    daemon_threads = True

    def shutdown(self):
        super().shutdown()
        self.server_close()


def serve_oracle_teacher(host="127.0.0.1", port=0, delay_s=0.0):
    """Start the oracle teacher: a scripted, deterministic stand-in for a teacher LLM (no GPU),
    serving OpenAI-style POST /chat/completions and GET /health in a daemon thread. It judges only
    from the expert actions written in the prompt (see oracle_verdict); any real LLM endpoint
    replaces it via --teacher-url. `delay_s` sleeps per request, to mimic a slow teacher.
    Returns the server: `server.server_address[1]` is the port, `server.shutdown()` stops it."""
    server = OracleServer((host, port), OracleHandler)
    server.delay_s = delay_s
    # A short poll interval makes shutdown() quick.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                     name="oracle-teacher").start()
    return server
