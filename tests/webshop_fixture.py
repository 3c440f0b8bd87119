"""Test fixture: a tiny WebShop environment server on loopback. It speaks the HTTP protocol of
AgentGym's WebShop server over a catalogue of a few products: a search page, result pages, item
pages with options, Buy Now with a reward from attribute, option and price matches (as WebShop
scores a purchase). `server.fault` injects the failures real servers show."""
import json
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from oracle import JSONHandler

PRODUCTS = {
    "B0TEA00001": {"title": "Organic green tea, 100 tea bags", "price": 12.99,
                   "attributes": ["organic", "green tea", "caffeine free"],
                   "options": {"flavor": ["jasmine", "mint"], "size": ["50 bags", "100 bags"]}},
    "B0TEA00002": {"title": "Black tea, breakfast blend, 50 tea bags", "price": 8.50,
                   "attributes": ["black tea"], "options": {"size": ["50 bags"]}},
    "B0MUG00003": {"title": "Ceramic coffee mug, dishwasher safe, 12 oz", "price": 9.00,
                   "attributes": ["ceramic", "dishwasher safe"], "options": {"color": ["white", "blue"]}},
    "B0SOCK0004": {"title": "Merino wool hiking socks, moisture wicking", "price": 15.00,
                   "attributes": ["wool", "moisture wicking"], "options": {"size": ["medium", "large"]}},
}

GOALS = [  # session id = index
    {"asin": "B0TEA00001", "attributes": ["organic", "green tea"], "options": ["mint", "100 bags"], "price_upper": 20.0,
     "instruction": "i want organic green tea with mint flavor, 100 bags, and price lower than 20.00 dollars"},
    {"asin": "B0SOCK0004", "attributes": ["wool", "moisture wicking"], "options": ["large"], "price_upper": 20.0,
     "instruction": "i need wool socks that are moisture wicking in size large, and price lower than 20.00 dollars"},
    {"asin": "B0MUG00003", "attributes": ["dishwasher safe"], "options": ["blue"], "price_upper": 10.0,
     "instruction": "i am looking for a blue mug that is dishwasher safe, and price lower than 10.00 dollars"},
]


def purchase_reward(goal, asin, chosen):
    """Share of the goal's attributes, options and price limit that the purchase meets."""
    product = PRODUCTS[asin]
    hits = sum(a in product["attributes"] for a in goal["attributes"])
    hits += sum(o in chosen.values() for o in goal["options"])
    hits += product["price"] <= goal["price_upper"]
    return round(hits / (len(goal["attributes"]) + len(goal["options"]) + 1), 4)


class Shop:
    """One environment: the page the agent is on and what it chose."""

    def __init__(self, session=0):
        self.goal = GOALS[session % len(GOALS)]
        self.page, self.results, self.asin, self.chosen, self.done = "search", [], None, {}, False

    def observation(self):
        if self.page == "search":
            return f"WebShop [SEP] Instruction: [SEP] {self.goal['instruction']} [SEP] Search"
        if self.page == "results":
            rows = [f"{a} [SEP] {PRODUCTS[a]['title']} [SEP] ${PRODUCTS[a]['price']:.2f}" for a in self.results]
            return " [SEP] ".join([f"Back to Search [SEP] Page 1 (Total results: {len(rows)})"] + rows)
        product = PRODUCTS[self.asin]
        options = [f"{name} [SEP] " + " [SEP] ".join(values) for name, values in product["options"].items()]
        return " [SEP] ".join(["Back to Search [SEP] < Prev"] + options + [
            product["title"], f"Price: ${product['price']:.2f}", "Rating: N.A.", "Buy Now"])

    def clickables(self):
        if self.page == "search":
            return ["search"]
        if self.page == "results":
            return ["back to search"] + [a.lower() for a in self.results]
        values = [v for vs in PRODUCTS[self.asin]["options"].values() for v in vs]
        return ["back to search", "< prev", "buy now"] + values

    def step(self, action):
        """(page, reward, done); an action the page does not offer changes nothing, as in WebShop."""
        kind, _, arg = action.partition("[")
        arg = arg.removesuffix("]").strip().lower()
        if kind == "search" and self.page == "search":
            words = set(arg.split())
            scored = [(sum(w in (p["title"] + " " + " ".join(p["attributes"])).lower() for w in words), a)
                      for a, p in PRODUCTS.items()]
            self.page, self.results = "results", [a for s, a in sorted(scored, key=lambda x: -x[0]) if s > 0]
        elif kind == "click" and arg in self.clickables():
            return self.click(arg)
        return self.observation(), 0.0, False

    def click(self, arg):
        if arg == "back to search":
            self.page = "search"
        elif arg == "< prev":
            self.page = "results"
        elif arg == "buy now":
            self.done = True
            reward = purchase_reward(self.goal, self.asin, self.chosen)
            return f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {reward}", reward, True
        elif self.page == "results":
            self.page, self.asin, self.chosen = "item", arg.upper(), {}
        else:
            name = next(n for n, vs in PRODUCTS[self.asin]["options"].items() if arg in vs)
            self.chosen[name] = arg
        return self.observation(), 0.0, False


class Handler(JSONHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, as simple fixture servers do

    def reply(self, obj, code=200):
        self.send_json(code, obj)

    def faulty(self, path):
        """Plays the fault set for this path, if any; True when it answered in its place."""
        fault_path, kind = self.server.fault or (None, None)
        if path != fault_path:
            return False
        if kind == "sleep":
            time.sleep(self.server.sleep_s)
        elif kind == "http500":
            self.reply({"detail": "Internal Server Error"}, code=500)
        elif kind == "error200":
            self.reply({"error": "env_idx 7 is not a live environment"})
        elif kind == "traceback":
            self.reply({"state": 'Traceback (most recent call last):\n  File "env.py", line 1\nKeyError: 7',
                        "reward": 0.0, "done": False, "info": None})
        return kind != "sleep"

    def do_GET(self):
        url = urlparse(self.path)
        if self.faulty(url.path):
            return
        if url.path == "/":
            return self.reply("ok")
        env = self.server.envs.get(int(parse_qs(url.query).get("env_idx", ["-1"])[0]))
        if env is None:  # like AgentGym-style servers: the failure comes back with HTTP 200
            return self.reply({"error": "unknown env_idx"})
        if url.path == "/observation":
            return self.reply(env.observation())
        if url.path == "/available_actions":
            return self.reply({"has_search_bar": env.page == "search", "clickables": env.clickables()})
        if url.path == "/instruction_text":
            return self.reply("Instruction: " + env.goal["instruction"])
        self.reply({"detail": "Not Found"}, code=404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.faulty(self.path):
            return
        server = self.server
        if self.path == "/create":
            with server.lock:
                idx, server.next_idx = server.next_idx, server.next_idx + 1
                server.envs[idx] = Shop()
            return self.reply(idx)
        if self.path == "/close":
            return self.reply({"closed": server.envs.pop(body["env_idx"], None) is not None})
        env = server.envs.get(body.get("env_idx"))
        if env is None:
            return self.reply({"error": "unknown env_idx"})
        if self.path == "/reset":
            server.envs[body["env_idx"]] = env = Shop(body.get("session_id") or 0)
            return self.reply([env.observation(), None])
        if self.path == "/step":
            state, reward, done = env.step(body["action"])
            return self.reply({"state": state, "reward": reward, "done": done, "info": None})
        self.reply({"detail": "Not Found"}, code=404)


class WebShopFixture(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host="127.0.0.1", port=0):
        super().__init__((host, port), Handler)
        self.envs, self.next_idx, self.lock = {}, 0, threading.Lock()
        self.fault, self.sleep_s = None, 0.0  # fault: (path, "sleep" | "http500" | "error200" | "traceback")
        self.url = f"http://{host}:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the timeout test's client has hung up
            super().handle_error(request, client_address)

    def shutdown(self):
        super().shutdown()
        self.server_close()
