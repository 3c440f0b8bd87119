"""The teacher of stage 2: its prompt (within a token budget), the parsing of its verdict, and an
OpenAI-compatible client with structured output, timeouts, bounded retries, a bound on the requests
in flight, and a circuit breaker that stops a run whose teacher is down.

An AgentStep (envs) -> chat messages -> HTTP -> a Verdict; TeacherConfig and connect set a client up."""
import email.utils
import json
import logging
import math
import os
import random
import re
import statistics
import threading
import time
from collections import namedtuple
from dataclasses import dataclass

import requests

from data import render_turn
from envs import AgentStep, StepFacts

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the teacher: prompt and verdict

TEACHER_SYSTEM = """\
You supervise an AI agent that acts in a text environment. After each step of the agent you \
decide whether that step was a sensible move towards finishing the task. A reference, when one \
is given, shows one way to succeed; other ways can be right too. The expert's next action after \
the agent's step, when given, is a good corrected action.
Answer with a single JSON object and nothing else. Its keys:
- "verdict": "correct" if the step is fine, "wrong" if it is not;
- "reflection": for a wrong step, what went wrong and why, briefly, in the agent's own voice;
- "thought": for a wrong step, what the agent should think next, from the state after its step;
- "action": for a wrong step, the one command the agent should do next, as the environment \
understands it.
For a correct step, reflection, thought and action are empty strings."""

# The verdict as a JSON schema, for servers that constrain their output to one. Every key is
# required and the root is a plain object: the subset that OpenAI's strict mode, vLLM and llama.cpp
# all accept. A wrong verdict with an empty field is rejected by parse_verdict, not by the schema.
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["correct", "wrong"]},
                   "reflection": {"type": "string"}, "thought": {"type": "string"}, "action": {"type": "string"}},
    "required": ["verdict", "reflection", "thought", "action"],
    "additionalProperties": False,
}

STEP_HEADER = "## The agent's latest step"
REFERENCE_HEADER = "## Reference"
REFERENCES = ("expert", "golden", "none")
# The reference section's lines: what the environment and its expert know about the step (see
# envs.StepFacts). Fixed prefixes: the oracle teacher reads them. A plan's length counts one
# action for each change of room (a teleport), so another way to the same room is no longer.
VERDICT_RULE = ("A step is wrong if the environment rejected it, if it cannot be undone, if it made the "
                "expert's remaining plan longer, or if it repeated an earlier step to the same result without "
                "making the plan shorter. A step that changes nothing, or takes another way to the goal, is not "
                "wrong. The expert's next action is never wrong.")
ENGINE_REJECTED = "The environment rejected the step: "
CAN_UNDO = "The step can be undone: "
REPEATS = "The step repeats an earlier step with the same result: "
PLAN_BEFORE = "Expert's remaining plan before the agent's step: "
PLAN_AFTER = "Expert's remaining plan after the agent's step: "
EXPERT_BEFORE = "Expert's next action before the agent's step: "
EXPERT_AFTER = "Expert's next action after the agent's step: "
EXPERT_THEN = "Expert's actions after that: "
EXPERT_WHY = "Expert's reason for its next action: "
NO_WAY = "no way to finish the task"
TAKEN_BACK = ("; if you judge it wrong, the run takes it back and your corrected action runs from the state "
              "before it, where the expert's next action before the step is the right one")
SHOWN_PLAN = 3  # actions of the expert's plan shown after its next one


def one_line(text):
    return " ".join(str(text).split())


def history_turns(messages, task=""):
    """Messages as 'Agent: ...'/'Environment: ...' turns; the system prompt and a repeat of the task
    are left out because the prompt states them once already."""
    msgs = [m for m in messages if m["role"] != "system"]
    if msgs and msgs[0]["role"] == "user" and msgs[0]["content"].strip() == task.strip():
        msgs = msgs[1:]
    who = {"user": "Environment", "assistant": "Agent"}
    return [f"{who[m['role']]}: {m['content']}" for m in msgs]


def render_history(messages, task=""):
    return "\n".join(history_turns(messages, task)) or "(nothing yet)"


# Teacher prompts of SciWorld episodes have 3.5 characters a token with LLaMA-2's tokenizer, 3.9
# with SmolLM2's (larger vocabularies do better): counting one token per 3 characters over-estimates
# (estimate_tokens: by 19 % and 32 %), so a prompt cut to a budget by this count fits the real one.
CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 8  # the chat template's role markers around each message
LEFT_OUT = "[... {} messages of the history left out to fit the prompt budget ...]"


def estimate_tokens(messages):
    """A tokenizer-free over-estimate of the length of a chat prompt in tokens."""
    return sum(math.ceil(len(m["content"]) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE for m in messages)


def cut_middle(turns, max_chars):
    """`turns` joined by newlines within max_chars: the last and first turns, taken alternately
    from the end (the latest matter most to judge the next step) and from the start, and a marker
    in place of the middle; all of them when they fit."""
    if len("\n".join(turns)) <= max_chars:
        return turns
    head, tail = [], []
    room = max_chars - len(LEFT_OUT.format(len(turns))) - 1
    front, back = 0, len(turns)
    while front < back:
        from_end = len(tail) <= len(head)
        turn = turns[back - 1] if from_end else turns[front]
        if len(turn) + 1 > room:
            break
        room -= len(turn) + 1
        if from_end:
            tail.insert(0, turn)
            back -= 1
        else:
            head.append(turn)
            front += 1
    return head + [LEFT_OUT.format(back - front)] + tail


def yes_no(flag):
    return "yes" if flag else "no"


def plan_size(length):
    return NO_WAY if length is None else f"{length} action{'s' * (length != 1)}"


def render_facts(step: AgentStep):
    """The reference lines of what the environment and its expert know about `step`: the verdict
    rule and the engine's facts when they are known (step.facts.rejected is not None), the expert's
    plan lengths when it has a plan, and the expert's next actions."""
    facts, lines = step.facts, []
    if facts.rejected is not None:
        lines += [VERDICT_RULE, ENGINE_REJECTED + yes_no(facts.rejected), REPEATS + yes_no(facts.repeated)]
        why = "it ended the task without success" if step.done else f"the expert has {NO_WAY} from here"
        why += TAKEN_BACK if step.undo_if_wrong else ""
        lines.append(CAN_UNDO + ("no: " + why if facts.irreversible else "yes"))
    if facts.plan_before is not None:
        lines += [PLAN_BEFORE + plan_size(facts.plan_before), PLAN_AFTER + plan_size(facts.plan_after)]
    for prefix, action in ((EXPERT_BEFORE, facts.expert_before), (EXPERT_AFTER, facts.expert_after)):
        if action:
            lines.append(prefix + one_line(action))
    if facts.expert_after and facts.expert_thought_after:
        lines.append(EXPERT_WHY + one_line(facts.expert_thought_after))
    plan = facts.expert_plan_after
    later = (plan[1:] if plan[:1] == [facts.expert_after] else plan)[:SHOWN_PLAN]
    if facts.expert_after and later:
        lines.append(EXPERT_THEN + "; ".join(one_line(a) for a in later))
    return lines


def render_reference(step: AgentStep, reference, golden):
    """The reference section: with "expert", what the environment knows about the step and the
    expert's actions, under the rule the verdict follows (render_facts); with "golden", the task's
    golden trajectory; with "none", nothing."""
    lines = render_facts(step) if reference == "expert" else []
    if golden and reference != "none":
        lines += ["Golden trajectory of this task:", render_history(golden)]
    return "\n".join(lines) or "(none: judge from the task and the history)"


def check_reference(reference):
    """ValueError unless `reference` is one of REFERENCES."""
    if reference not in REFERENCES:
        raise ValueError(f"teacher reference must be one of {REFERENCES}, got {reference!r}")


def teacher_prompt(step: AgentStep, reference="expert", golden=None, max_prompt_tokens=None):
    """Chat messages asking the teacher for a verdict on `step`.
    reference: "expert" (expert's next action before/after the step), "golden" (the task's golden
    trajectory, a list of messages in `golden`), "none". The reference section comes last and
    its expert lines have fixed prefixes: the oracle teacher reads them from there.
    max_prompt_tokens: the history is cut in the middle (cut_middle) until the prompt's estimated
    size (estimate_tokens) fits; the other sections are kept whole."""
    check_reference(reference)
    latest = [f"Thought: {one_line(step.thought)}"] if step.thought else []
    if step.action is not None:
        latest.append(f"Action: {one_line(step.action)}")
    else:
        latest.append(f"Reply (no action could be parsed): {one_line(step.reply)}")
    latest.append(f"Observation: {step.observation}")

    def prompt(turns):
        history = "\n".join(turns) or "(nothing yet)"
        user = "\n\n".join([
            f"## Environment instruction\n{step.instruction}",
            f"## Task\n{step.task}",
            f"## History\n{history}",
            STEP_HEADER + "\n" + "\n".join(latest),
            REFERENCE_HEADER + "\n" + render_reference(step, reference, golden),
            "Judge the agent's latest step. Answer with the JSON object only."])
        return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]

    turns = history_turns(step.history, step.task)
    messages = prompt(turns)
    if max_prompt_tokens and estimate_tokens(messages) > max_prompt_tokens:
        room = (max_prompt_tokens - estimate_tokens(prompt([]))) * CHARS_PER_TOKEN
        messages = prompt(cut_middle(turns, room))
    return messages


@dataclass
class Verdict:
    """The teacher's verdict on one step: a wrong one comes with what went wrong (reflection) and
    the correction (thought, action); TeacherClient.judge adds what asking for it cost."""
    verdict: str  # "correct", "wrong", or "unjudged" (no usable answer; `reason` says why)
    reflection: str = ""
    thought: str = ""
    action: str = ""
    content: str = ""  # a wrong step's correction as the agent's turn: render_turn(action, thought, reflection)
    reason: str = ""
    calls: int = 0  # HTTP requests made for this step
    latency_s: float = 0.0


def parse_verdict(text):
    """The first JSON object with a "verdict" in `text` (fences and prose around it are fine), as a
    Verdict: "correct", or "wrong" with reflection, thought and action; None when there is none or
    a "wrong" lacks a field or fills one with a placeholder."""
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
    """The Verdict in a parsed JSON object with a "verdict" key; None when it is not a usable one."""
    verdict = str(obj["verdict"]).strip().lower()
    if verdict == "correct":
        return Verdict("correct")
    fields = {k: one_line(obj.get(k) or "") for k in ("reflection", "thought", "action")}
    if verdict != "wrong" or any(is_placeholder(v) for v in fields.values()):
        return None
    return Verdict("wrong", **fields)


def is_placeholder(text):
    """Empty, no letter or digit ("...", "-"), or a slot in angle brackets ("<action>"): what a
    model writes when it copies a template instead of answering."""
    return not re.search(r"\w", text) or re.fullmatch(r"<[^<>]*>", text) is not None

# ----------------------------------------------------------------------------- the client

# Failures of the network or the server, worth a retry (a bad URL is not among them).
NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
# The forms in which servers take a JSON schema for their answer; "text": none, the answer is parsed.
RESPONSE_FORMATS = {
    "json_schema": {"type": "json_schema",  # OpenAI, vLLM, llama.cpp's server
                    "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA}},
    "json_object": {"type": "json_object", "schema": VERDICT_SCHEMA},  # llama-cpp-python and others
    "text": None,
}
FORM_REFUSED = (400, 422, 500)  # how servers answer a response_format they do not take
REJECTED = (400, 413, 422)  # the server refuses this request: sending it again cannot help
FATAL = (401, 403, 404)  # a wrong key, URL or model name: every request fails the same way

Failure = namedtuple("Failure", "why status retry_after_s")

# A made-up step for the check before a run: small, so that any server answers it quickly.
PROBE_STEP = AgentStep(env="probe", split="", task_id="probe",
                       instruction="You are an agent in a house. Reply with a thought and an action.",
                       task="Your task is to boil water.", history=[],
                       reply="Thought: I need a pot.\nAction: go to kitchen", thought="I need a pot.",
                       action="go to kitchen", observation="You move to the kitchen.",
                       facts=StepFacts(expert_before="go to kitchen", expert_after="pick up pot"))


class TeacherError(RuntimeError):
    """The teacher did not answer, after all retries."""

    def __init__(self, message, calls=0):
        super().__init__(message)
        self.calls = calls


class TeacherRejected(TeacherError):
    """The server refused this request (HTTP 400, 413, 422): asking again cannot help."""


class TeacherUnavailable(TeacherError):
    """The teacher is down or misconfigured: the run stops rather than play on unjudged."""


class CircuitBreaker:
    """Opens when the teacher stays down: after max_failures failed requests in a row (each one
    after its retries, from any thread), or at a failure when no answer came for max_outage_s.
    Once open it stays open: every request raises TeacherUnavailable."""

    def __init__(self, max_failures=5, max_outage_s=600.0, clock=time.monotonic):
        self.max_failures, self.max_outage_s, self.clock = max_failures, max_outage_s, clock
        self.failures, self.last_answer, self.reason = 0, clock(), None
        self._lock = threading.Lock()

    def answered(self):
        with self._lock:
            self.failures, self.last_answer = 0, self.clock()

    def failed(self, why):
        """Counts a failed request; raises TeacherUnavailable when that opens the breaker."""
        with self._lock:
            self.failures += 1
            silent_s = self.clock() - self.last_answer
            if self.reason is None and (self.failures >= self.max_failures or silent_s >= self.max_outage_s):
                self.reason = (f"the teacher is down ({self.failures} requests in a row failed, no answer for "
                               f"{silent_s:.0f} s); the last failure: {why}")
        self.check()

    def check(self):
        if self.reason:
            raise TeacherUnavailable(self.reason)


def mean_max(values):
    return {"mean": round(statistics.fmean(values), 3), "max": max(values)} if values else None


class TeacherStats:
    """What a client's verdict requests gave and cost, over all threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.steps = self.unjudged = self.answers = self.parsed = self.cut = self.over_budget = 0
        self.prompt_tokens, self.estimated_tokens, self.answer_tokens, self.latency_s = [], [], [], []

    def answer(self, reply, parsed):
        """One answer of the server: parsed or not, its token counts when the server reports them."""
        with self._lock:
            self.answers += 1
            self.parsed += parsed
            for key, values in (("prompt_tokens", self.prompt_tokens), ("completion_tokens", self.answer_tokens)):
                if isinstance(reply["usage"].get(key), int):
                    values.append(reply["usage"][key])

    def step(self, verdict, messages, max_prompt_tokens, latency_s):
        """One step judged: its verdict, the prompt sent and its budget, the time it took."""
        with self._lock:
            self.steps += 1
            self.unjudged += verdict == "unjudged"
            self.cut += LEFT_OUT.split("{}")[1] in messages[-1]["content"]
            self.estimated_tokens.append(estimate_tokens(messages))
            self.over_budget += bool(max_prompt_tokens) and self.estimated_tokens[-1] > max_prompt_tokens
            self.latency_s.append(latency_s)

    def summary(self):
        with self._lock:
            return {"judged_steps": self.steps, "unjudged_rate": round(self.unjudged / max(self.steps, 1), 4),
                    "answers": self.answers, "parse_rate": round(self.parsed / max(self.answers, 1), 4),
                    "prompt_tokens": mean_max(self.prompt_tokens),  # as the server counted them
                    "prompt_tokens_estimated": mean_max(self.estimated_tokens), "prompts_cut": self.cut,
                    "prompts_over_budget": self.over_budget,  # too long even without any history
                    "answer_tokens": mean_max(self.answer_tokens), "latency_s": mean_max(self.latency_s)}


class TeacherClient:
    """A chat-completions client for the teacher. It asks for the verdict as JSON with VERDICT_SCHEMA
    in the first response_format form the server takes (the first answer settles it for the run),
    as plain text when it takes none. Timeouts, bounded retries (exponential backoff with jitter,
    Retry-After honoured on 429/503), at most `max_in_flight` requests at once across all threads,
    and a circuit breaker (max_failures, max_outage_s: see CircuitBreaker). The key comes from
    STEP_TEACHER_API_KEY or OPENAI_API_KEY and is never logged."""

    def __init__(self, base_url, model, *, timeout=60.0, max_retries=4, parse_retries=2,
                 backoff_s=1.0, max_wait_s=60.0, max_in_flight=8, temperature=0.0,
                 max_tokens=512, max_prompt_tokens=None, response_format="auto", max_failures=5,
                 max_outage_s=600.0, sleep=time.sleep):
        if response_format != "auto" and response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be auto or one of {list(RESPONSE_FORMATS)}, got {response_format!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_retries = model, timeout, max_retries
        self.parse_retries, self.temperature, self.max_tokens = parse_retries, temperature, max_tokens
        self.backoff_s, self.max_wait_s, self.sleep = backoff_s, max_wait_s, sleep
        self.max_prompt_tokens = max_prompt_tokens
        self.response_format = None if response_format == "auto" else response_format  # None: not settled yet
        self.breaker = CircuitBreaker(max_failures, max_outage_s)
        self.stats = TeacherStats()
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

    def _post(self, messages, temperature, form):
        """One request: ({"content", "usage"}, None) on an answer, else (None, Failure)."""
        body = {"model": self.model, "messages": messages,
                "temperature": temperature, "max_tokens": self.max_tokens}
        if RESPONSE_FORMATS[form]:
            body["response_format"] = RESPONSE_FORMATS[form]
        try:
            with self._slots:
                r = self._session().post(self.url, json=body, timeout=self.timeout)
        except NETWORK_ERRORS as e:
            return None, Failure(f"{type(e).__name__}: {e}", None, None)
        if r.status_code != 200:
            return None, Failure(f"HTTP {r.status_code}: {r.text[:300]}", r.status_code,
                                 parse_retry_after(r.headers.get("Retry-After")))
        try:
            payload = r.json()
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            return None, Failure(f"malformed response body {r.text[:100]!r}", r.status_code, None)
        usage = payload.get("usage")
        return {"content": content, "usage": usage if isinstance(usage, dict) else {}}, None

    def _post_in_a_format(self, messages, temperature):
        """One request in the settled response_format; until one is settled, the forms in turn
        while the server refuses them. Returns (reply or None, the last failure, requests made)."""
        forms = [self.response_format] if self.response_format else list(RESPONSE_FORMATS)
        for n, form in enumerate(forms, 1):
            reply, failure = self._post(messages, temperature, form)
            if reply is not None:
                if self.response_format is None:
                    log.info("teacher %s takes response_format %s", self.url, form)
                    self.response_format = form
                return reply, None, n
            if form == forms[-1] or failure.status not in FORM_REFUSED:
                return None, failure, n
            log.warning("teacher %s: response_format %s refused (%s); trying %s", self.url, form,
                        self._redact(failure.why[:200]), forms[n])

    def _complete(self, messages, temperature, max_retries=None):
        """The teacher's reply ({"content", "usage"}) and the number of requests made. Retries the
        failures of the network and the server; TeacherRejected or TeacherUnavailable at once for
        what a retry cannot fix; TeacherError when the retries run out."""
        max_retries = self.max_retries if max_retries is None else max_retries
        calls = 0
        for attempt in range(max_retries + 1):
            self.breaker.check()
            reply, failure, n = self._post_in_a_format(messages, temperature)
            calls += n
            if reply is not None:
                return reply, calls
            if failure.status in FATAL:
                raise TeacherUnavailable(self._redact(f"teacher {self.url} (model {self.model!r}): {failure.why}"), calls)
            if failure.status in REJECTED:
                raise TeacherRejected(self._redact(f"teacher {self.url}: {failure.why}"), calls)
            if attempt < max_retries:
                wait = self._wait_s(attempt, failure.retry_after_s)
                log.warning("teacher %s: %s (attempt %d of %d), retrying in %.2f s", self.url,
                            self._redact(failure.why[:200]), attempt + 1, max_retries + 1, wait)
                self.sleep(wait)
        raise TeacherError(self._redact(f"teacher {self.url}: no answer after {attempt + 1} attempts; "
                                        f"last failure: {failure.why[:300]}"), calls)

    def _wait_s(self, attempt, retry_after):
        if retry_after is not None:  # the server knows best, within reason
            return min(retry_after, self.max_wait_s)
        return min(self.max_wait_s, self.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)

    def check(self):
        """One verdict request on a made-up step, before the first episode: it settles the
        response_format, and raises TeacherUnavailable, naming the URL and what came back, when the
        teacher does not answer. Returns the answer's text."""
        try:
            reply, _ = self._complete(teacher_prompt(PROBE_STEP), self.temperature, max_retries=1)
        except TeacherError as e:
            raise TeacherUnavailable(f"the teacher did not answer a test request: {e}") from None
        self.breaker.answered()
        log.info("teacher %s (model %r) answers in response_format %s: %r", self.url, self.model,
                 self.response_format, reply["content"][:200])
        return reply["content"]

    def _answer(self, messages, temperature):
        """An answer and the requests made, asking again through an outage until the circuit
        breaker opens: a step is judged, or the run stops, but no step goes unjudged for want of
        a teacher."""
        calls = 0
        while True:
            try:
                reply, n = self._complete(messages, temperature)
            except TeacherRejected as e:
                e.calls += calls
                self.breaker.failed(str(e))  # a server that refuses every request is no teacher either
                raise
            except TeacherUnavailable:
                raise
            except TeacherError as e:
                calls += e.calls
                self.breaker.failed(str(e))
                continue
            self.breaker.answered()
            return reply, calls + n

    def judge(self, step: AgentStep, reference="expert", golden=None) -> Verdict:
        """The Verdict on one agent step (see teacher_prompt for reference and golden), with the
        correction as the agent's turn (content) when wrong, the HTTP requests made (calls) and
        latency_s. An answer without a verdict is asked for again (sampling), then gives "unjudged"
        with a reason, as does a request the server refuses: the step is counted, never lost. A
        teacher that does not answer is asked again until it does or the circuit breaker opens:
        TeacherUnavailable, which stops the run."""
        t0, calls = time.monotonic(), 0
        messages = teacher_prompt(step, reference, golden, self.max_prompt_tokens)
        for attempt in range(self.parse_retries + 1):
            # A greedy teacher would repeat the same garbage: sample when asking again.
            temperature = self.temperature if attempt == 0 else max(self.temperature, 0.7)
            try:
                reply, n = self._answer(messages, temperature)
            except TeacherRejected as e:
                calls += e.calls
                result = Verdict("unjudged", reason=str(e))
                break
            calls += n
            result = parse_verdict(reply["content"])
            self.stats.answer(reply, parsed=result is not None)
            result = result or Verdict("unjudged", reason=f"unparseable verdict: {reply['content'][:200]!r}")
            if result.verdict != "unjudged":
                break
        if result.verdict == "wrong":
            result.content = render_turn(result.action, result.thought, result.reflection)
        result.calls, result.latency_s = calls, round(time.monotonic() - t0, 3)
        self.stats.step(result.verdict, messages, self.max_prompt_tokens, result.latency_s)
        return result


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

# ----------------------------------------------------------------------------- a run's teacher


@dataclass
class TeacherConfig:
    """A run's teacher (step.py's --teacher-* options): its endpoint (url, an OpenAI-compatible base
    URL; model, the name it serves there), what it is shown as a reference (one of REFERENCES, see
    teacher_prompt), and the client's limits: seconds per request, the prompt's token budget (None:
    none), the answer's, the response_format, and the circuit breaker's max_failures and max_outage
    in seconds (see TeacherClient)."""
    url: str | None = None  # None: no endpoint named (the pipeline serves the oracle teacher then)
    model: str = "oracle"
    reference: str = "expert"
    timeout: float = 120.0
    max_prompt_tokens: int | None = None
    max_answer_tokens: int = 512
    response_format: str = "auto"
    max_failures: int = 5
    max_outage: float = 600.0

    def __post_init__(self):
        check_reference(self.reference)  # here rather than at the first step judged


def connect(config: TeacherConfig, max_in_flight: int) -> TeacherClient:
    """A client for config's teacher with at most max_in_flight requests at once, asked one test
    request before any episode (TeacherClient.check): TeacherUnavailable, naming the URL and what
    came back, when the teacher does not answer."""
    if not config.url:
        raise ValueError("the teacher config names no url to connect to")
    client = TeacherClient(config.url, config.model, timeout=config.timeout, max_in_flight=max_in_flight,
                           max_prompt_tokens=config.max_prompt_tokens, max_tokens=config.max_answer_tokens,
                           response_format=config.response_format, max_failures=config.max_failures,
                           max_outage_s=config.max_outage)
    client.check()
    return client
