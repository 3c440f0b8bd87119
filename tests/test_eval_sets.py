"""The literature's evaluation sets (ETO's lists, shipped in eval_sets/eto/) and their selection."""
import pytest

import envs
from rollout import AgentConfig


@pytest.mark.slow
def test_eto_sciworld_lists_are_engine_variations_of_their_split():
    """Unseen = ETO's 211 test pairs, seen = its 194 dev pairs, each a variation of that split in
    the real engine, over the 24 task families ETO uses."""
    unseen, seen = envs.eto_tasks("sciworld", "test"), envs.eto_tasks("sciworld", "dev")
    assert len(unseen) == len(set(unseen)) == 211 and len(seen) == len(set(seen)) == 194
    assert envs.eto_tasks("sciworld", "unseen") == unseen and envs.eto_tasks("sciworld", "seen") == seen
    assert unseen[0] == "boil/21"  # ETO's ["task-1-boil", 21]
    assert "measure-melting-point-known-substance" in {envs.task_family("sciworld", t) for t in unseen}
    options = AgentConfig(env="sciworld", split="test", eval_set="eto").env_options(unseen)
    assert len(options["tasks"]) == 24 and set(options["tasks"]) <= set(envs.SCIWORLD_MAX_STEPS)
    for split, listed in (("test", unseen), ("dev", seen)):
        env = envs.make_env("sciworld", split, **options)
        try:
            selected = envs.select_tasks("sciworld", env.task_ids(), None, listed)
            first = envs.select_tasks("sciworld", env.task_ids(), 24, listed)  # --tasks 24: one of each family
        finally:
            env.close()
        assert sorted(selected) == sorted(listed)  # every pair, each once, reordered round-robin by family
        assert len({envs.task_family("sciworld", t) for t in first}) == 24


def test_eto_alfworld_and_webshop_lists():
    unseen = envs.eto_tasks("alfworld", "valid_unseen")
    assert len(unseen) == 134 and all(t.startswith("valid_unseen/") and "/trial_" in t for t in unseen)
    assert envs.eto_tasks("alfworld", "valid_seen") is None  # ETO plays every seen game
    sessions = envs.eto_tasks("webshop", "test")
    assert len(sessions) == 200 and sessions[0] == "2853"
    with pytest.raises(ValueError, match="no list for webshop split 'train'"):
        envs.eto_tasks("webshop", "train")


def test_listed_tasks_that_the_split_lacks_are_refused():
    """The shipped ALFWorld games are not ETO's: asking for ETO's list says so instead of playing others."""
    shipped = envs.alfworld_games(envs.ALFWORLD_SHIPPED, "valid_unseen")
    with pytest.raises(ValueError, match="134 listed task ids are not in this split, e.g. "):
        envs.select_tasks("alfworld", list(shipped), None, envs.eto_tasks("alfworld", "valid_unseen"))
