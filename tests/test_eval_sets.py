"""The literature's evaluation sets (ETO's lists, shipped in eval_sets/eto/) and their selection."""
import argparse

import pytest

import envs
import step


def agent_args(env, split, eval_set="eto", tasks=None, task_types=None):
    return argparse.Namespace(env=env, split=split, eval_set=eval_set, task_file=None, tasks=tasks,
                              task_types=task_types, max_steps=None)


def test_eto_sciworld_lists_are_engine_variations_of_their_split():
    """Unseen = ETO's 211 test pairs, seen = its 194 dev pairs, each a variation of that split in
    the real engine, over the 24 task families ETO uses."""
    unseen, seen = step.eto_tasks("sciworld", "test"), step.eto_tasks("sciworld", "dev")
    assert len(unseen) == len(set(unseen)) == 211 and len(seen) == len(set(seen)) == 194
    assert step.eto_tasks("sciworld", "unseen") == unseen and step.eto_tasks("sciworld", "seen") == seen
    assert unseen[0] == "boil/21"  # ETO's ["task-1-boil", 21]
    assert "measure-melting-point-known-substance" in {envs.task_family("sciworld", t) for t in unseen}
    options = step.env_options(agent_args("sciworld", "test"), unseen)
    assert len(options["tasks"]) == 24 and set(options["tasks"]) <= set(envs.SCIWORLD_MAX_STEPS)
    for split, listed in (("test", unseen), ("dev", seen)):
        env = envs.make_env("sciworld", split, **options)
        try:
            selected = step.select_tasks("sciworld", env.task_ids(), None, listed)
            first = step.select_tasks("sciworld", env.task_ids(), 24, listed)  # --tasks 24: one of each family
        finally:
            env.close()
        assert sorted(selected) == sorted(listed)  # every pair, each once, reordered round-robin by family
        assert len({envs.task_family("sciworld", t) for t in first}) == 24


def test_eto_alfworld_and_webshop_lists():
    unseen = step.eto_tasks("alfworld", "valid_unseen")
    assert len(unseen) == 134 and all(t.startswith("valid_unseen/") and "/trial_" in t for t in unseen)
    assert step.eto_tasks("alfworld", "valid_seen") is None  # ETO plays every seen game
    sessions = step.eto_tasks("webshop", "test")
    assert len(sessions) == 200 and sessions[0] == "2853"
    with pytest.raises(step.StepError, match="no list for webshop split 'train'"):
        step.eto_tasks("webshop", "train")


def test_listed_tasks_that_the_split_lacks_are_refused():
    """The shipped ALFWorld games are not ETO's: asking for ETO's list says so instead of playing others."""
    shipped = envs.alfworld_games(envs.ALFWORLD_SHIPPED, "valid_unseen")
    with pytest.raises(step.StepError, match="134 listed task ids are not in this split, e.g. "):
        step.select_tasks("alfworld", list(shipped), None, step.eto_tasks("alfworld", "valid_unseen"))
