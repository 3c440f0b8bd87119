"""The WebShop client against a fixture server on loopback that speaks the same protocol."""
import socket

import pytest

import envs
import rollout
from envs import EnvServerError, WebShopEnv
from webshop_fixture import WebShopFixture

pytestmark = pytest.mark.slow  # an environment server on loopback


@pytest.fixture
def server():
    srv = WebShopFixture()
    yield srv
    srv.shutdown()


def make_env(server, **options):
    return WebShopEnv("test", url=server.url, sessions="0:3", **options)


def test_purchase_with_the_right_options_earns_reward_one(server):
    env = make_env(server)
    assert env.task_ids() == ["0", "1", "2"] and env.max_steps == 10 and env.expert_action() is None
    obs = env.reset("0")
    assert obs == ("WebShop [SEP] Instruction: [SEP] i want organic green tea with mint flavor, 100 bags, "
                   "and price lower than 20.00 dollars [SEP] Search")
    obs, reward, done, info = env.step("search[organic green tea]")
    assert obs.startswith("Back to Search [SEP] Page 1 (Total results: 2) [SEP] B0TEA00001 [SEP] Organic green tea")
    assert (reward, done, info) == (0.0, False, {"score": 0.0, "won": False, "invalid": False})
    obs, *_ = env.step("click[B0TEA00001]")
    assert "flavor [SEP] jasmine [SEP] mint [SEP] size [SEP] 50 bags [SEP] 100 bags" in obs
    env.step("click[mint]")
    env.step("click[100 bags]")
    obs, reward, done, info = env.step("click[Buy Now]")
    assert obs.startswith("Thank you for shopping with us!")
    assert (reward, done, info) == (1.0, True, {"score": 1.0, "won": True, "invalid": False})
    env.close()
    assert server.envs == {}


def test_wrong_option_gets_partial_reward_and_invalid_actions_are_flagged(server):
    env = make_env(server)
    env.reset("0")
    page = env.step("search[green tea]")[0]
    obs, reward, done, info = env.step("click[B0NOSUCH99]")  # not on the page: the server changes nothing
    assert (obs, reward, done, info["invalid"]) == (page, 0.0, False, True)
    obs, reward, done, info = env.step("buy the tea")  # malformed: not sent, the page is shown again
    assert (obs, info["invalid"]) == ("Invalid action.\n\n" + page, True)
    env.step("click[b0tea00001]")  # click values match without case, as in WebShop
    env.step("click[jasmine]")
    env.step("click[100 bags]")
    _, reward, done, info = env.step("click[Buy Now]")
    assert (reward, done, info) == (0.8, True, {"score": 0.8, "won": False, "invalid": False})  # 4 of 5 matches
    env.close()


def test_undo_takes_a_purchase_back_in_a_new_server_env(server):
    env = make_env(server)
    env.reset("0")
    for action in ["search[green tea]", "click[B0TEA00001]", "click[jasmine]", "click[100 bags]"]:
        env.step(action)
    assert env.step("click[Buy Now]")[1:3] == (0.8, True)  # the wrong flavour
    env.undo()  # the session replayed without the purchase
    assert len(server.envs) == 1
    env.step("click[mint]")
    assert env.step("click[Buy Now]")[1:3] == (1.0, True)
    env.close()
    assert server.envs == {}


def test_run_episodes_scores_scripted_shoppers_and_frees_every_server_env(server):
    scripts = {  # session -> actions; the socks are bought in the wrong size
        "0": ["search[green tea]", "click[B0TEA00001]", "click[mint]", "click[100 bags]", "click[Buy Now]"],
        "1": ["search[wool socks]", "click[B0SOCK0004]", "click[medium]", "click[Buy Now]"],
        "2": ["search[dishwasher safe mug]", "click[B0MUG00003]", "click[blue]", "click[Buy Now]"],
    }

    def shopper(histories, keys):
        return [f"Thought: next step.\nAction: {scripts[key.split('/')[-1]][sum(m['role'] == 'assistant' for m in h)]}"
                for h, key in zip(histories, keys)]

    trajs = rollout.run_episodes(shopper, lambda: make_env(server), make_env(server).task_ids(), parallel=3)
    assert [(t["reward"], t["success"], t["steps"], t["end_reason"]) for t in trajs] == [
        (1.0, True, 5, "done"), (0.75, False, 4, "done"), (1.0, True, 4, "done")]
    assert envs.summarize(trajs)["webshop/test"]["metric"] == pytest.approx(100 * 2.75 / 3)
    assert server.envs == {}


def test_reset_closes_the_previous_environment_and_close_releases_it(server):
    env = make_env(server)
    env.reset("1")
    first = set(server.envs)
    assert env.reset("2").endswith("a blue mug that is dishwasher safe, and price lower than 10.00 dollars [SEP] Search")
    assert len(server.envs) == 1 and set(server.envs) != first
    env.close()
    assert server.envs == {}
    env.close()  # closing twice is harmless


@pytest.mark.parametrize("kind, message", [
    ("http500", r"/step answered HTTP 500: .*Internal Server Error"),
    ("error200", r"/step returned an error \(with HTTP 200\): env_idx 7 is not a live environment"),
    ("traceback", r"/step returned an error as the page: Traceback \(most recent call last\)"),
])
def test_server_errors_raise_clear_exceptions(server, kind, message):
    env = make_env(server)
    env.reset("0")
    server.fault = ("/step", kind)
    with pytest.raises(EnvServerError, match=server.url + message):
        env.step("search[tea]")


def test_a_slow_server_times_out(server):
    env = make_env(server, timeout=0.3)
    env.reset("0")
    server.fault, server.sleep_s = ("/step", "sleep"), 1.0
    with pytest.raises(EnvServerError, match=server.url + r"/step did not answer within 0.3 s \(timeout\)"):
        env.step("search[tea]")


def test_health_check_names_the_url_of_a_dead_server():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EnvServerError, match=f"http://127.0.0.1:{port}.* is not reachable"):
        WebShopEnv("test", url=f"http://127.0.0.1:{port}", timeout=2)


def test_splits_and_session_options(server):
    assert WebShopEnv("test", url=server.url).task_ids()[-1] == "499"
    assert WebShopEnv("dev", url=server.url, sessions="5:7").task_ids() == ["5", "6"]
    with pytest.raises(ValueError, match="WebShop split must be one of"):
        WebShopEnv("dev", url=server.url)
    with pytest.raises(ValueError, match="WebShop sessions must be 'start:stop'"):
        WebShopEnv("test", url=server.url, sessions="0-3")
    with pytest.raises(ValueError, match="WebShop task ids are session numbers, got 'B0TEA00001'"):
        WebShopEnv("test", url=server.url).reset("B0TEA00001")
