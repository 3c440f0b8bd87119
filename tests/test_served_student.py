"""The agent served over HTTP (rollout.served_policy, `--student-url`): the prompts go out as the token
ids the agent was trained on, and the replies equal the in-process decoder's on the same checkpoint.
The server here is a small OpenAI-style /v1/completions on loopback that runs model.py's greedy
generate, as vLLM serves a checkpoint (prompts as ids, stop_token_ids, return_token_ids)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from data import encode_prompt
from model import ModelArgs, Transformer, generate, save_model, train_tokenizer
from rollout import make_policy, served_policy, stop_ids

pytestmark = pytest.mark.slow  # a server on loopback

SYSTEM = "You are an agent. Reply with a thought and an action."
TEXTS = [SYSTEM, "Your task is to find a plant.", "Thought: I look.\nAction: look around", "You see a fern."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    tok = train_tokenizer(TEXTS * 20 + ["[INST] [/INST] <<SYS>> <</SYS>>"], root / "tokenizer.model", 300)
    torch.manual_seed(0)
    model = Transformer(ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=tok.vocab_size, hidden_dim=160,
                                  max_seq_len=512)).eval()
    save_model(model, root / "model", files=[root / "tokenizer.model"])
    return model, tok


@pytest.fixture
def server(checkpoint):
    model, _ = checkpoint
    requests_seen = []

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
            requests_seen.append(request)
            ends = set(request["stop_token_ids"])
            replies = generate(model, request["prompt"], request["max_tokens"], eos_id=ends)
            # vLLM returns the stop token with the ids; the policy drops it
            self.send({"choices": [{"index": i, "token_ids": ids + [min(ends)], "text": ""}
                                   for i, ids in enumerate(replies)]})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Completions)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", requests_seen
    httpd.shutdown()
    httpd.server_close()


def test_served_replies_equal_the_in_process_ones(checkpoint, server):
    model, tok = checkpoint
    url, requests_seen = server
    histories = [[{"role": "system", "content": SYSTEM, "loss": False},
                  {"role": "user", "content": task, "loss": False}] for task in TEXTS[1:]]
    keys = [f"episode-{i}" for i in range(len(histories))]
    served = served_policy(url, tok, max_new_tokens=12)(histories, keys)
    assert served == make_policy(model, tok, max_new_tokens=12)(histories, keys)
    [request] = requests_seen
    assert request["prompt"] == [encode_prompt(tok, h) for h in histories]
    assert (request["model"], request["max_tokens"], request["temperature"], request["return_token_ids"]) == (
        "student", 12, 0.0, True)
    assert set(request["stop_token_ids"]) == stop_ids(tok)


def test_a_server_without_a_model_is_refused_by_name():
    with pytest.raises(ValueError, match=r"student server http://127.0.0.1:9/v1: no model listed"):
        served_policy("http://127.0.0.1:9/v1", None, max_new_tokens=4)
