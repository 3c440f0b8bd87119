import copy
import json
import os
import random

import numpy as np
import pytest
import torch

from data import (IGNORE_INDEX, append_jsonl, apply_variant, build_samples, collate, convert_eto, encode_prompt,
                  length_grouped_batches, load_eto, load_trajectories, padding_fraction, read_jsonl, render_turn,
                  validate_trajectory)
from encoding import encode_chat, trained_runs
from model import Tokenizer, train_tokenizer

# Meta's LLaMA-2 tokenizer.model (gated: not shipped), for the checks on the genuine vocabulary.
LLAMA2_TOKENIZER = os.environ.get("STEP_LLAMA2_TOKENIZER")

SYSTEM = "You are a household agent. Reply with a Thought and an Action."
TASK = "Your task is to: put a clean mug in the coffeemachine."
OBS1 = "On the countertop 1, you see a mug 1 and a knife 2."
OBS2 = "Nothing happens."
STEP1 = "Thought: I need a mug first.\nAction: go to countertop 1"
WRONG = "Thought: the sink is next.\nAction: go to sink 1"
FIX = dict(reflection="I left the mug behind.", thought="Take the mug first.", action="take mug 1 from countertop 1")


def msg(role, content, loss=False, **fields):
    return {"role": role, "content": content, "loss": loss, **fields}


def reflected_messages():
    return [msg("system", SYSTEM), msg("user", TASK), msg("assistant", STEP1, True),
            msg("user", OBS1), msg("assistant", WRONG, False, error=True),
            msg("user", OBS2), msg("assistant", render_turn(**FIX), True, **FIX)]


def trajectory(messages=None, source="reflected", **fields):
    return {"id": "alfworld/train/7", "env": "alfworld", "task": "7", "split": "train", "source": source,
            "messages": reflected_messages() if messages is None else messages, "reward": 1.0,
            "success": True, **fields}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = [SYSTEM, TASK, OBS1, OBS2, STEP1, WRONG, render_turn(**FIX), "[INST] [/INST] <<SYS>> <</SYS>>"]
    return train_tokenizer(texts * 5, tmp_path_factory.mktemp("tok") / "tokenizer.model", vocab_size=500)


@pytest.fixture(scope="module")
def llama_tok():
    if not LLAMA2_TOKENIZER:
        pytest.skip("set STEP_LLAMA2_TOKENIZER to Meta's LLaMA-2 tokenizer.model to check its vocabulary")
    return Tokenizer(LLAMA2_TOKENIZER)


# ----------------------------------------------------------------------------- encoding

def test_render_turn():
    assert render_turn("look", "I am lost.", "I walked in circles.") == \
        "Reflection: I walked in circles.\nThought: I am lost.\nAction: look"
    assert render_turn("look", "I am lost.") == "Thought: I am lost.\nAction: look"
    assert render_turn("look") == "Action: look"


def test_encode_chat_exact_tokens_and_labels(tok):
    assert 400 <= tok.vocab_size <= 600 and (tok.bos_id, tok.eos_id) == (1, 2)
    ids, labels = encode_chat(tok, reflected_messages())
    # Expectation from the pieces: each pair is BOS, the [INST] part, the reply with its trailing space, EOS.
    first_user = f"<<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{TASK}"
    expected_ids, expected_labels = [], []
    for user, reply, trained in [(first_user, STEP1, True), (OBS1, WRONG, False), (OBS2, render_turn(**FIX), True)]:
        prompt = [1] + tok.encode(f"[INST] {user} [/INST]")
        answer = tok.encode(f"{reply} ") + [2]
        expected_ids += prompt + answer
        expected_labels += [IGNORE_INDEX] * len(prompt) + (answer if trained else [IGNORE_INDEX] * len(answer))
    assert ids == expected_ids
    assert labels == expected_labels
    assert ids.count(1) == 3 and ids.count(2) == 3 and ids[0] == 1 and ids[-1] == 2
    # The trained tokens are exactly the two trained replies, each with its trailing space and EOS.
    runs = trained_runs(ids, labels)
    assert [r[-1] for r in runs] == [2, 2]
    assert [tok.decode(r[:-1]) for r in runs] == [STEP1 + " ", render_turn(**FIX) + " "]
    # Each pair is encoded on its own, so the next pair's dummy-prefix space follows the trailing space.
    assert tok.decode(ids) == (f"[INST] {first_user} [/INST] {STEP1}  [INST] {OBS1} [/INST] {WRONG}  "
                               f"[INST] {OBS2} [/INST] {render_turn(**FIX)} ")


def meta_dialog_tokens(tokenizer, dialog):
    """Meta's llama `chat_completion` formatting (llama/generation.py), written out independently."""
    B_INST, E_INST = "[INST]", "[/INST]"
    B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"], "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}] + dialog[2:]
    tokens = sum([tokenizer.encode(f"{B_INST} {(prompt['content']).strip()} {E_INST} {(answer['content']).strip()} ",
                                   bos=True, eos=True)
                  for prompt, answer in zip(dialog[::2], dialog[1::2])], [])
    if dialog[-1]["role"] == "user":
        tokens += tokenizer.encode(f"{B_INST} {(dialog[-1]['content']).strip()} {E_INST}", bos=True)
    return tokens


def test_llama2_vocabulary_matches_meta(llama_tok):
    assert llama_tok.encode("[INST]") == [518, 25580, 29962]
    assert llama_tok.encode("[/INST]") == [518, 29914, 25580, 29962]
    ids, labels = encode_chat(llama_tok, [msg("user", "Hi"), msg("assistant", "Hello!", True)])
    assert ids == [1, 518, 25580, 29962, 6324, 518, 29914, 25580, 29962, 15043, 29991, 29871, 2]
    assert labels == [IGNORE_INDEX] * 9 + [15043, 29991, 29871, 2]
    messages = reflected_messages()
    messages[0]["content"] = " \nBe brief.\n"  # kept inside <<SYS>>, as Meta does
    messages[3]["content"] = "  \nYou see a mug 1.\n\n "  # stripped, as Meta does
    assert encode_chat(llama_tok, messages)[0] == meta_dialog_tokens(llama_tok, messages)
    for n in (2, 4, 6):
        assert encode_prompt(llama_tok, messages[:n]) == meta_dialog_tokens(llama_tok, messages[:n])


REPLIES = ["Thought: go.\nAction: go to sink 1", "  Thought: padded \n\nAction: look  \n", "\n\nAction: look\n", "",
           " x", "Action: put mug 1 in/on coffeemachine 1\n"]
USERS = ["  You see a mug.\n", "\nNothing happens.  ", "OK"]


def check_prompt_plus_generated(tok, history, reply):
    ids, labels = encode_chat(tok, history + [msg("assistant", reply, True)])
    prompt = encode_prompt(tok, history)
    generated = ids[len(prompt):]
    assert ids[:len(prompt)] == prompt
    # What the model must generate after the prompt: the stripped reply and a space (sentencepiece's
    # dummy prefix stands for the space after [/INST]), then EOS; all of it and only it is trained.
    assert generated == tok.encode(f"{reply.strip()} ") + [tok.eos_id]
    assert labels[len(prompt):] == generated
    assert tok.decode(generated[:-1]).strip() == reply.strip()


@pytest.mark.parametrize("which", ["trained", "llama2"])
def test_prompt_plus_generated_is_the_trained_pair(which, tok, request):
    tokenizer = tok if which == "trained" else request.getfixturevalue("llama_tok")
    for reply in REPLIES:
        for user in USERS:
            check_prompt_plus_generated(tokenizer, [msg("system", SYSTEM), msg("user", user)], reply)
            history = [msg("user", TASK), msg("assistant", random.Random(reply).choice(REPLIES), True), msg("user", user)]
            check_prompt_plus_generated(tokenizer, history, reply)


def test_encoding_rejects_bad_role_order(tok):
    with pytest.raises(ValueError, match="alternating"):
        encode_chat(tok, [msg("user", "a"), msg("user", "b")])
    with pytest.raises(ValueError, match="end on a user"):
        encode_chat(tok, [msg("user", "a")])
    with pytest.raises(ValueError, match="must end on a user"):
        encode_prompt(tok, [msg("user", "a"), msg("assistant", "b")])


def test_prefix_check_fails_loudly():
    class MergingTokenizer:  # a tokenizer that merges "]" with the following space
        bos_id, eos_id, chat_format = 1, 2, "llama2"

        def encode(self, text, bos=False, eos=False):
            return [1] * bos + [ord(c) for c in text.replace("] ", "\x00")] + [2] * eos
    with pytest.raises(ValueError, match="prefix"):
        encode_chat(MergingTokenizer(), [msg("user", "a"), msg("assistant", "b", True)])
    with pytest.raises(ValueError, match="trajectory 'alfworld/train/7': .*prefix"):
        build_samples(MergingTokenizer(), [trajectory()], max_len=None)


# ----------------------------------------------------------------------------- files

def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("broken, error", [
    (lambda t: "{not json", "bad JSON"),
    (lambda t: json.dumps({k: v for k, v in t.items() if k != "reward"}), "missing field 'reward'"),
    (lambda t: json.dumps({**t, "messages": t["messages"][:2] + t["messages"][3:]}),
     r"messages\[2\].role: expected assistant"),
    (lambda t: json.dumps({**t, "messages": t["messages"][:-1]}), "ends on an assistant message"),
    (lambda t: json.dumps({**t, "messages": [*t["messages"][:2], {**t["messages"][2], "loss": "yes"}, *t["messages"][3:]]}),
     r"messages\[2\].loss: expected bool"),
    (lambda t: json.dumps({**t, "source": "teacher"}), "field 'source'"),
    (lambda t: json.dumps({**t, "success": 1}), "field 'success'"),
])
def test_loader_errors_name_file_and_line(tmp_path, broken, error):
    good = json.dumps(trajectory())
    path = write_lines(tmp_path / "t.jsonl", [good, good, broken(trajectory())])
    with pytest.raises(ValueError, match=f"{path}:3: .*{error}"):
        load_trajectories(path)


def test_loader_round_trip(tmp_path):
    trajectories = [trajectory(), trajectory(source="golden", messages=[msg("user", TASK), msg("assistant", STEP1, True)])]
    for t in trajectories:
        append_jsonl(tmp_path / "t.jsonl", t)
    assert load_trajectories(tmp_path / "t.jsonl") == trajectories


def test_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, trajectory())
    with open(path, "a") as f:
        f.write('{"id": "alfworld/train/8", "me')  # a writer killed mid-line
    assert read_jsonl(path) == [trajectory()]
    with pytest.raises(ValueError, match=f"{path}:2: bad JSON"):
        load_trajectories(path)  # a trajectory file is read strictly: resume its writer first
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    append_jsonl(path, {"step": 2})  # a resumed writer cuts the fragment first
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    with open(path, "a") as f:
        f.write('{"step": 3}')  # a complete last line without newline is kept
    append_jsonl(path, {"step": 4})
    assert read_jsonl(path) == [{"step": i} for i in (1, 2, 3, 4)]
    write_lines(path, ['{"step": 1}', "{torn", '{"step": 3}'])
    with pytest.raises(ValueError, match=f"{path}:2: bad JSON"):
        read_jsonl(path)  # only a last line may be torn


ETO = [{"id": "alfworld_12", "conversations": [
           {"from": "human", "value": "Interact with a household to solve a task.\nHere is an example: ..."},
           {"from": "gpt", "value": "OK"},
           {"from": "human", "value": "You are in the middle of a room.\nYour task is to: put a mug in the sink."},
           {"from": "gpt", "value": "Thought: I need a mug.\nAction: go to countertop 1"},
           {"from": "human", "value": "On the countertop 1, you see a mug 1."},
           {"from": "gpt", "value": "Thought: here it is.\nAction: take mug 1 from countertop 1"}]},
       {"id": "alfworld_13", "conversations": [
           {"from": "human", "value": "Task: look around."}, {"from": "gpt", "value": "Thought: ok.\nAction: look"}]}]


def expected_from_eto(record, env):
    roles = {"human": ("user", False), "gpt": ("assistant", True)}
    return {"id": record["id"], "env": env, "task": record["id"], "split": "train", "source": "golden",
            "reward": 1.0, "success": True,
            "messages": [msg(*roles[t["from"]][:1], t["value"], roles[t["from"]][1]) for t in record["conversations"]]}


@pytest.mark.parametrize("layout", ["json", "jsonl"])
def test_eto_round_trip(tmp_path, layout):
    path = tmp_path / f"eto.{layout}"
    path.write_text(json.dumps(ETO) if layout == "json" else "".join(json.dumps(r) + "\n" for r in ETO))
    converted = load_eto(path, "alfworld")
    assert converted == [expected_from_eto(r, "alfworld") for r in ETO]
    assert converted[0]["messages"][1] == msg("assistant", "OK", True)  # ETO's "OK" turn is kept
    for t in converted:
        append_jsonl(tmp_path / "ours.jsonl", t)
    assert load_trajectories(tmp_path / "ours.jsonl") == converted
    back = [{"id": t["id"], "conversations": [{"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]}
                                              for m in t["messages"]]} for t in converted]
    assert back == ETO


def test_eto_alfworld_data_in_the_old_grammar_is_warned_about(caplog):
    old = copy.deepcopy(ETO)
    old[0]["conversations"].append({"from": "human", "value": "You pick up the mug 1 from the countertop 1."})
    old[0]["conversations"].append({"from": "gpt", "value": "Thought: now the coffeemachine.\n"
                                                            "Action: put mug 1 in/on coffeemachine 1"})
    with caplog.at_level("WARNING", logger="data"):
        convert_eto(ETO, "alfworld")
        assert caplog.records == []
        convert_eto(old, "alfworld")
    assert [r.getMessage()[:90] for r in caplog.records] == [
        '1 of 2 ALFWorld trajectories place objects with "put X in/on Y", alfworld 0.3.x\'s grammar:']


def test_eto_errors(tmp_path):
    bad = copy.deepcopy(ETO)
    bad[1]["conversations"][1]["from"] = "bot"
    with pytest.raises(ValueError, match=r"ETO record 1: conversations\[1\]"):
        convert_eto(bad, "alfworld")
    path = write_lines(tmp_path / "eto.jsonl", [json.dumps(r) for r in bad])
    with pytest.raises(ValueError, match=f"{path}:2: conversations"):
        load_eto(path, "alfworld")
    bad[1]["conversations"] = bad[1]["conversations"][:1]  # ends on the human turn
    with pytest.raises(ValueError, match="ETO record 1: messages: a trajectory ends on an assistant"):
        convert_eto(bad, "alfworld")


def test_validate_trajectory_corrected_turn_needs_parts():
    t = trajectory()
    del t["messages"][-1]["thought"]
    with pytest.raises(ValueError, match="'thought' and 'action'"):
        validate_trajectory(t)
    t = trajectory()
    t["messages"][1]["loss"] = True
    with pytest.raises(ValueError, match=r"messages\[1\].loss: only assistant"):
        validate_trajectory(t)
    t = trajectory()
    t["messages"][2]["thought"] = "I need a mug first."  # an annotated golden turn keeps both parts
    with pytest.raises(ValueError, match=r"messages\[2\]: a turn with a 'thought' field needs its 'action'"):
        validate_trajectory(t)


# ----------------------------------------------------------------------------- variants and samples

def test_apply_variant():
    t = trajectory()
    before = copy.deepcopy(t)
    masked = apply_variant(t)
    assert [m["loss"] for m in masked["messages"]] == [False, False, True, False, False, False, True]
    assert masked == before and masked is not t
    unmasked = apply_variant(t, mask_errors=False)
    assert [m["loss"] for m in unmasked["messages"]] == [False, False, True, False, True, False, True]
    plain = apply_variant(t, reflection=False)
    assert plain["messages"][-1]["content"] == "Thought: Take the mug first.\nAction: take mug 1 from countertop 1"
    assert "reflection" not in plain["messages"][-1] and plain["messages"][:-1] == before["messages"][:-1]
    assert t == before  # the input is never mutated
    in_thought = apply_variant(t, placement="thought")  # the reflection placement ablation
    assert in_thought["messages"][-1]["content"] == ("Thought: I left the mug behind. Take the mug first.\n"
                                                     "Action: take mug 1 from countertop 1")
    assert in_thought["messages"][:-1] == before["messages"][:-1]
    assert apply_variant(t, reflection=False, placement="thought") == plain
    with pytest.raises(ValueError, match="placement must be one of"):
        apply_variant(t, placement="end")
    golden = trajectory(source="golden", messages=[msg("user", TASK), msg("assistant", STEP1, True)])
    for options in [{}, {"mask_errors": False}, {"reflection": False}, {"placement": "thought"}]:
        out = apply_variant(golden, **options)
        assert out == golden and out is not golden and out["messages"] is not golden["messages"]


def test_encode_chat_max_len_keeps_whole_pairs(tok):
    ids, labels = encode_chat(tok, reflected_messages())
    ends = [i + 1 for i, x in enumerate(ids) if x == tok.eos_id]
    for max_len, kept in [(ends[2], ends[2]), (ends[2] - 1, ends[1]), (ends[1], ends[1]), (ends[0], ends[0]),
                          (ends[0] - 1, 0), (None, ends[2])]:
        assert encode_chat(tok, reflected_messages(), max_len) == (ids[:kept], labels[:kept])


def test_build_samples_counts_truncation_and_drops(tok):
    full_ids, full_labels = encode_chat(tok, reflected_messages())
    pair_ends = [i + 1 for i, x in enumerate(full_ids) if x == tok.eos_id]
    max_len = pair_ends[1] + 3  # two whole pairs fit, the third does not
    all_masked = [msg("user", TASK), msg("assistant", WRONG, False, error=True), msg("user", OBS1), msg("assistant", STEP1, True)]
    trajectories = [
        trajectory(),                                   # truncated after two pairs
        trajectory(messages=reflected_messages()[:3]),  # fits whole
        trajectory(messages=all_masked),                # only the last (long) pair is trained, beyond max_len
        trajectory(messages=[msg("user", TASK * 12), msg("assistant", STEP1, True)]),  # first pair too long
        trajectory(messages=[msg("user", TASK), msg("assistant", WRONG, False, error=True)]),  # nothing to train
    ]
    trajectories[2]["messages"][2]["content"] = OBS1 * 4
    assert len(encode_chat(tok, trajectories[3]["messages"])[0]) > max_len
    samples, stats = build_samples(tok, trajectories, max_len)
    assert samples[0] == (full_ids[:pair_ends[1]], full_labels[:pair_ends[1]])
    assert samples[1] == encode_chat(tok, reflected_messages()[:3])
    trainable = sum(x != IGNORE_INDEX for _, labels in samples for x in labels)
    assert stats == {"trajectories": 5, "samples": 2, "truncated": 1, "dropped": 3,
                     "drop_reasons": {"no trainable token within max_len": 1, "first pair longer than max_len": 1,
                                      "no trainable token": 1},
                     "tokens": pair_ends[1] + len(samples[1][0]), "trainable_tokens": trainable}
    assert all(len(ids) <= max_len for ids, _ in samples)
    # Without masking the error steps of the third and fifth trajectories are trained: both are kept.
    _, stats = build_samples(tok, trajectories, max_len, mask_errors=False)
    assert (stats["samples"], stats["truncated"], stats["dropped"]) == (4, 2, 1)
    # Reflection off: the corrected turn is shorter, and its tokens say so.
    samples, _ = build_samples(tok, trajectories[:1], None, reflection=False)
    assert samples[0] == encode_chat(tok, apply_variant(trajectories[0], reflection=False)["messages"])
    assert "Reflection" not in tok.decode(samples[0][0]) and "Reflection" in tok.decode(full_ids)
    samples, _ = build_samples(tok, trajectories[:1], None, placement="thought")
    assert samples[0] == encode_chat(tok, apply_variant(trajectories[0], placement="thought")["messages"])
    assert "Reflection" not in tok.decode(samples[0][0]) and FIX["reflection"] in tok.decode(samples[0][0])


# ----------------------------------------------------------------------------- batching

def realistic_lengths(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    sigma = 0.75  # mean ~410 tokens, a tail to the 4096 cap
    lengths = np.clip(rng.lognormal(np.log(410) - sigma ** 2 / 2, sigma, n), 30, 4096).astype(int)
    lengths[:3] = [4096, 4096, 3000]
    return lengths.tolist()


@pytest.mark.parametrize("batch_tokens", [4096, 16384, 32768])
def test_length_grouped_batches(batch_tokens):
    lengths = realistic_lengths()
    assert 380 < np.mean(lengths) < 440 and max(lengths) == 4096
    batches = length_grouped_batches(lengths, batch_tokens, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= batch_tokens for b in batches)
    fraction = padding_fraction(batches, lengths)
    print(f"batch_tokens {batch_tokens}: {len(batches)} batches, padding {fraction:.2%}")
    assert 0 < fraction < 0.05
    assert batches == length_grouped_batches(lengths, batch_tokens, seed=3)
    assert batches != length_grouped_batches(lengths, batch_tokens, seed=4)  # the order changes per epoch


def test_sample_over_budget_goes_alone():
    lengths = [100, 5000, 102, 99, 4000]
    batches = length_grouped_batches(lengths, 4096, seed=0)
    assert sorted(map(sorted, batches)) == [[0, 2, 3], [1], [4]]
    assert padding_fraction(batches, lengths) == pytest.approx(5 / (306 + 5000 + 4000))


def test_batch_closed_before_too_much_padding():
    lengths = [100] * 10 + [120] * 10  # one batch would be 1/11 padding, within budget
    batches = length_grouped_batches(lengths, 100_000, seed=0)
    assert sorted(map(sorted, batches)) == [list(range(10)), list(range(10, 20))]
    assert padding_fraction(batches, lengths) == 0.0


def test_collate():
    samples = [([1, 5, 6, 2], [IGNORE_INDEX, IGNORE_INDEX, 6, 2]), ([1, 7], [IGNORE_INDEX, 7])]
    ids, labels = collate(samples, pad_id=0)
    assert ids.dtype == labels.dtype == torch.long
    assert ids.tolist() == [[1, 5, 6, 2], [1, 7, 0, 0]]
    assert labels.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 6, 2], [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX]]
