"""The teacher of stage 2: its prompt, the parsing of its verdict, and an OpenAI-compatible client
with timeouts, bounded retries and a bound on the requests in flight.

A step dict (see envs.agent_step) -> chat messages -> HTTP -> a verdict dict (see envs.apply_verdict)."""
import email.utils
import json
import logging
import os
import random
import re
import threading
import time

import requests

from data import render_turn

log = logging.getLogger(__name__)

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
