"""A small OpenAI-style /v1/completions server on loopback that runs model.py's greedy generate, as vLLM
serves a checkpoint (prompts as token ids, stop_token_ids, return_token_ids): the stand-in the served-student
tests talk to. As a command, `python tests/completions_server.py --model DIR --port P` serves DIR."""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import generate, load_model  # noqa: E402


def completions_server(model, port=0):
    """The server (not yet serving); `requests_seen` collects the request bodies."""
    class Completions(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, payload):
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.send({"object": "list", "data": [{"id": "student", "object": "model"}]})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            httpd.requests_seen.append(request)
            ends = set(request["stop_token_ids"])
            replies = generate(model, request["prompt"], request["max_tokens"], eos_id=ends)
            # vLLM returns the stop token with the ids; the policy drops it
            self.send({"choices": [{"index": i, "token_ids": ids + [min(ends)], "text": ""}
                                   for i, ids in enumerate(replies)]})

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Completions)
    httpd.requests_seen = []
    return httpd


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    completions_server(load_model(args.model).eval(), args.port).serve_forever()
