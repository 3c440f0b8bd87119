"""The oracle teacher: a scripted, deterministic stand-in for a teacher LLM, serving the same
OpenAI-compatible API on loopback. It judges only from the reference section of the teacher prompt
(teacher.py writes there what the environment and its expert know about the step), so any real LLM
endpoint replaces it with --teacher-url. Its thoughts and reflections are scripted templates, worded
by the kind of action and of error (scripted_thought, reflection); annotate_golden gives golden
trajectories thoughts the same way (or through any `think` hook)."""
import copy
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from data import parse_action, render_turn
from envs import norm_action, with_article
from teacher import (CAN_UNDO, ENGINE_REJECTED, EXPERT_AFTER, EXPERT_BEFORE, EXPERT_THEN, EXPERT_WHY, NO_WAY,
                     PLAN_AFTER, PLAN_BEFORE, REFERENCE_HEADER, REPEATS, STEP_HEADER, TAKEN_BACK)

# ----------------------------------------------------------------------------- scripted thoughts

MOVES = ("go to ", "teleport to ")


def destination(action, later):
    """The room (SciWorld) a move or door is on the way to: the last move before the next other action."""
    room = action.split(" to ", 1)[1]
    for step in later:
        if not norm_action(step).startswith(MOVES + ("open door to ",)):
            break
        if norm_action(step).startswith(MOVES):
            room = step.split(" to ", 1)[1]
    return room


def what_to_focus_on(task, later):
    """What the task asks to focus on, in its own words: "a non-living thing", "the animal with the
    longest life span"; with two such (then-tasks), the first while another focus is still ahead."""
    found = re.search(r"find a\(n\) ([^.,]+)", task)
    if found:
        return with_article(found.group(1))
    named = re.findall(r"[Ff]ocus on (the (?!thing\b)[^.,]+)", task)
    if not named:
        return None
    return named[0] if any(norm_action(a).startswith("focus on ") for a in later) else named[-1]


def object_name(text):
    """A thing as a thought names it: "flower pot 6 containing apple tree and soil in inventory" -> "flower pot 6"."""
    return re.sub(r" (?:containing .*|in inventory|in [a-z ]+ studio)$", "", text.strip())


def scripted_thought(task, action, later=()):
    """A short thought for doing `action` next in `task`, `later` being the expert's actions after it:
    what the action is for, in the task's terms (scripted by the kind of action)."""
    a = norm_action(action)
    verb, _, rest = a.partition(" ")
    then = norm_action(later[0]) if later else ""
    if a.isdigit():
        return f"The simulator asked which one I meant: option {a} is the one I want."
    if a in ("look around", "look"):
        return "I look around to see what is here."
    if a == "inventory":
        return "I check what I am carrying."
    if a.startswith(MOVES) and action.split(" to ", 1)[1].strip():  # SciWorld rooms, ALFWorld places
        place = action.split(" to ", 1)[1].strip()
        if re.search(r"\d$", place):  # ALFWorld: a receptacle, "countertop 1"
            return alfworld_visit_thought(place, then)
        goal = destination(action, later)
        if goal != place:
            return f"I am heading for the {goal}; the way leads through the {place}."
        how = "teleport" if a.startswith("teleport") else "go"
        return f"What I need next is {'outside' if place == 'outside' else 'in the ' + place}, so I {how} there."
    if a.startswith("open door to "):
        goal, door = destination(action, later), a[len("open door to "):]
        return f"I open the door to the {door} to go through it." if goal == door else \
            f"I open the door to the {door} on my way to the {goal}."
    if a.startswith("focus on "):
        thing, asked = object_name(action[len("focus on "):]), what_to_focus_on(task, later)
        if asked:
            return f"The {thing} is {asked}, so I focus on it."
        return f"The task is about the {thing}: I focus on it."
    if a.startswith("pick up "):
        thing = object_name(action[len("pick up "):])
        box = next((m.group(1) for m in map(re.compile(r"move .* to (.+)$").match, map(norm_action, later)) if m), None)
        return f"I pick up the {thing} to bring it to the {box}." if box else f"I pick up the {thing}."
    if verb in ("move", "put") and " to " in rest:
        thing, place = rest.rsplit(" to ", 1)
        return f"I put the {object_name(thing)} in the {place}, as the task asks."
    if verb == "take" and " from " in rest:
        return f"I take the {rest.split(' from ')[0]}; the task needs it."
    if verb in ("heat", "cool", "clean", "slice") and " with " in rest:
        thing, tool = rest.split(" with ", 1)
        return f"I {verb} the {thing} with the {tool}, as the task asks."
    if verb in ("wait", "wait1"):
        return "I wait a moment to let the simulation catch up."
    if verb == "open":
        return f"I open the {rest} to see what is inside."
    if verb in ("examine", "read") or a.startswith(("look at ", "look in ")):
        return f"I take a closer look at the {object_name(a.split(' ', 2)[-1] if a.startswith('look') else rest)}."
    if verb == "use":
        return f"I use the {rest}, as the task needs."
    if verb in ("pour", "mix", "connect", "activate", "deactivate", "drop"):
        return f"Next I {verb} {rest}, a step the task needs."
    return f"Next: {action}."


def alfworld_visit_thought(place, then):
    """Why the expert goes to an ALFWorld receptacle: what it does there next."""
    verb, _, rest = then.partition(" ")
    if verb == "take" and " from " in rest:
        return f"I go to the {place} to take the {rest.split(' from ')[0]}."
    if verb == "move" and " to " in rest:
        return f"I go to the {place} to put the {rest.rsplit(' to ', 1)[0]} there."
    if verb == "open":
        return f"I go to the {place} and open it."
    if verb in ("heat", "cool", "clean", "slice") and " with " in rest:
        return f"I go to the {place} to {verb} the {rest.split(' with ')[0]}."
    if verb == "use":  # the lamp stands on the receptacle
        return f"I go to the {place} to switch on the {rest}."
    return f"I go to the {place}."


def annotate_golden(trajectory, think=None):
    """The trajectory with a thought on every assistant turn that has none: think(task, history,
    action, later) -> thought (default: the scripted one; later: the trajectory's actions after this
    one, history: the messages before the turn); turns become "Thought: ...\\nAction: ..." with
    "thought" and "action" fields. Turns that have a thought are kept as they are."""
    out = copy.deepcopy(trajectory)
    messages = out["messages"]
    task = next(m["content"] for m in messages if m["role"] == "user")
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    actions = [messages[i].get("action") or parse_action(messages[i]["content"]) for i in turns]
    think = think or (lambda task, history, action, later: scripted_thought(task, action, later))
    for n, i in enumerate(turns):
        if messages[i].get("thought") or re.search(r"^Thought:", messages[i]["content"], re.M) or actions[n] is None:
            continue
        thought = think(task, messages[:i], actions[n], actions[n + 1:])
        messages[i].update(content=render_turn(actions[n], thought), thought=thought, action=actions[n])
    return out


# ----------------------------------------------------------------------------- the verdict


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


def plan_length(text):
    return None if text is None or text == NO_WAY else int(text.split()[0])


def error_kind(step):
    """Why the step is wrong by the reference's facts (teacher.VERDICT_RULE), or None if it is not."""
    before, after = step["plan_before"], step["plan_after"]
    shorter = before is not None and after is not None and after < before
    if step["action"] is None:
        return "no_action"
    if step["rejected"]:
        return "rejected"
    if step["expert_before"] and norm_action(step["action"]) == norm_action(step["expert_before"]):
        return None
    if step["irreversible"]:
        return "irreversible"
    if before is not None and after is not None and after > before:
        return "longer"
    if step["repeated"] and not shorter:
        return "repeated"
    return None


def reflection(kind, step):
    """What went wrong, in the agent's voice, grounded in what the environment answered: worded by
    the kind of error (see error_kind) without repeating the failed action."""
    action, observation = norm_action(step["action"] or ""), step["observation"]
    verb = action.split(" ")[0] if action else ""
    if kind == "no_action":
        return "My reply had no action line, so nothing happened."
    if kind == "rejected":
        if observation.startswith("Unknown action") and "Ambiguous request" in step["previous"]:
            return "The simulator had asked which thing I meant; it wanted the number of an option."
        if action.startswith("teleport to "):
            return f"There is no place called the {action[len('teleport to '):]} to teleport to."
        if action.startswith("go to ") and not re.search(r"\d$", action):  # SciWorld rooms, not receptacles
            return f"There is no door from here to the {action[len('go to '):]}: I can only walk to a next room."
        if observation.startswith("Nothing happens"):
            return "Nothing happened: that was not possible where I am, with what I hold."
        if verb in ("focus", "pick", "move", "look", "open", "close", "use", "read", "examine", "eat", "pour", "mix"):
            return "The simulator did not know what I meant: nothing here goes by that name."
        return "The simulator does not know that command."
    if kind == "irreversible" and step["taken_back"]:  # the episode goes on from the state before the step
        if step["done"]:
            return ("That was the wrong thing to focus on: focusing on it fails the task."
                    if verb == "focus" else "That step fails the task.")
        return "That step leaves no way to finish the task."
    if kind == "irreversible":
        if step["done"]:
            return ("That was the wrong thing to focus on: it failed the task, and a focus cannot be undone."
                    if verb == "focus" else "That step failed the task, and it cannot be undone.")
        return "That step cannot be undone, and it leaves no way to finish the task."
    if kind == "longer":
        target = step["expert_after"] or ""
        if action.startswith(MOVES) and norm_action(target).startswith(MOVES):
            return f"I left the {target.split(' to ', 1)[1]}, where my next step has to happen."
        return "That took me further from the goal: it will have to be undone."
    place = re.fullmatch(r"(?:go to|examine|open) (.+ \d+)", action)  # an ALFWorld receptacle
    if place:
        return f"I had already looked at the {place.group(1)}: going back there shows me nothing new."
    return "I did the same thing before and got the same answer; doing it again gets me nowhere."


def read_step(prompt):
    """The agent's latest step and the reference's facts, as the prompt states them."""
    reference, latest = section(prompt, REFERENCE_HEADER), section(prompt, STEP_HEADER, REFERENCE_HEADER)
    start = prompt.find("\n## Task\n")  # the first one: it comes before the history
    task = prompt[start + 9:prompt.find("\n## History\n", start)] if start >= 0 else ""
    history = section(prompt, "## History", STEP_HEADER)
    return {"task": task, "action": find_line(latest, "Action: "),
            "observation": latest.partition("\nObservation: ")[2].strip(),
            "previous": history.rsplit("\nEnvironment: ", 1)[-1] if "Environment: " in history else "",
            "rejected": find_line(reference, ENGINE_REJECTED) == "yes",
            "repeated": find_line(reference, REPEATS) == "yes",
            "irreversible": (find_line(reference, CAN_UNDO) or "").startswith("no"),
            "done": "ended the task" in (find_line(reference, CAN_UNDO) or ""),
            "taken_back": TAKEN_BACK in (find_line(reference, CAN_UNDO) or ""),
            "known": find_line(reference, ENGINE_REJECTED) is not None,
            "plan_before": plan_length(find_line(reference, PLAN_BEFORE)),
            "plan_after": plan_length(find_line(reference, PLAN_AFTER)),
            "expert_before": find_line(reference, EXPERT_BEFORE), "expert_after": find_line(reference, EXPERT_AFTER),
            "expert_why": find_line(reference, EXPERT_WHY),
            "later": [a.strip() for a in (find_line(reference, EXPERT_THEN) or "").split(";") if a.strip()]}


def oracle_verdict(prompt):
    """The scripted teacher's answer to a teacher prompt, as the JSON object an LLM would write:
    "wrong" when the verdict rule says so (see error_kind), with a reflection and the expert's next
    action after the step (or, for a step that cannot be undone, the one it should have done: the
    episode ends, or goes on from the state before the step), thought through as the expert gives
    its reason (else scripted); else "correct". Without facts and an expert to correct by, every
    step is "correct"."""
    step = read_step(prompt)
    kind = error_kind(step) if step["known"] else None
    action = step["expert_before"] if kind == "irreversible" else step["expert_after"]
    if kind is None or not action:
        return {"verdict": "correct"}
    later = [] if kind == "irreversible" else step["later"]
    thought = step["expert_why"] if kind != "irreversible" and step["expert_why"] else \
        scripted_thought(step["task"], action, later)
    return {"verdict": "wrong", "reflection": reflection(kind, step), "thought": thought, "action": action}


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
    """The oracle teacher's server; delay_s: seconds each answer waits, to mimic a slow teacher."""
    daemon_threads = True

    def __init__(self, address, delay_s=0.0):
        super().__init__(address, OracleHandler)
        self.delay_s = delay_s

    def shutdown(self):
        super().shutdown()
        self.server_close()


def serve_oracle_teacher(host="127.0.0.1", port=0, delay_s=0.0):
    """Start the oracle teacher: a scripted, deterministic stand-in for a teacher LLM (no GPU),
    serving OpenAI-style POST /chat/completions and GET /health in a daemon thread. It judges only
    from the reference section of the prompt (see oracle_verdict); any real LLM endpoint replaces
    it via --teacher-url. `delay_s` sleeps per request, to mimic a slow teacher.
    Returns the server: `server.server_address[1]` is the port, `server.shutdown()` stops it."""
    server = OracleServer((host, port), delay_s)
    # A short poll interval makes shutdown() quick.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                     name="oracle-teacher").start()
    return server
