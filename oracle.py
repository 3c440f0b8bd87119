"""The oracle teacher: a scripted, deterministic stand-in for a teacher LLM, serving the same
OpenAI-compatible API on loopback. It judges only from the expert lines of the teacher prompt's
reference section (teacher.py builds them), so any real LLM endpoint replaces it with --teacher-url."""
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from teacher import EXPERT_AFTER, EXPERT_BEFORE, REFERENCE_HEADER, STEP_HEADER

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
