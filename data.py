"""Trajectories, and what is trained of them: loading and validation, ETO conversion, chat encoding
(LLaMA-2, LLaMA-3, ChatML) with loss labels, partial masking and the variants, length-grouped batching.

Data flows one way: trajectory dicts -> (token ids, labels) -> padded batches. Labels are aligned
with the ids (label i is id i when trained, IGNORE_INDEX when not); train.py's loss shifts them.
A message with "loss": false (a step the teacher judged wrong) stays in the context with no label:
that is partial masking, decided in rollout.py and applied here (apply_variant, encode_pair)."""
import copy
import json
import logging
import os
import random
import re
from collections import Counter

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)


class StepError(Exception):
    """A failure the user can act on (bad input, a diverged run): step.py prints it without a traceback."""


IGNORE_INDEX = -100
SOURCES = ("golden", "reflected", "agent")
FIELDS = {"id": str, "env": str, "task": str, "split": str, "source": str, "messages": list,
          "reward": (int, float), "success": bool}
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
# LLaMA-3: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>, BOS before the first message.
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
# ChatML (Qwen2.5, SmolLM2): <|im_start|>role\ncontent<|im_end|>\n
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def render_turn(action, thought=None, reflection=None):
    """The one place an assistant turn is formatted from its parts; absent parts are left out."""
    parts = [("Reflection", reflection), ("Thought", thought), ("Action", action)]
    return "\n".join(f"{name}: {text}" for name, text in parts if text is not None)


def parse_action(reply):
    """The text after the last "Action:" (its first line, stripped); None when there is none."""
    head, sep, tail = (reply or "").rpartition("Action:")
    lines = tail.strip().splitlines()
    return lines[0].strip() if sep and lines and lines[0].strip() else None


def parse_thought(reply):
    """The text after the last "Thought:" before the last "Action:"; None when there is none."""
    head, sep, _ = (reply or "").rpartition("Action:")
    _, found, thought = (head if sep else reply or "").rpartition("Thought:")
    return thought.strip() if found else None


# ----------------------------------------------------------------------------- JSONL files

def append_jsonl(path, record):
    """Append one line, flushed and fsynced: a killed writer loses at most the line it was writing."""
    end_torn_line(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")  # ASCII only, so a torn line never splits a character
        f.flush()
        os.fsync(f.fileno())


def end_torn_line(path):
    """A last line without newline is cut if it is a killed writer's fragment (appending would
    glue the next record to it), else finished with a newline."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
            f.write(b"\n")
        except ValueError:
            log.warning("%s: cutting a torn last line (%d bytes) before appending", path, len(data) - start)
            f.truncate(start)


def jsonl_lines(path, torn_ok):
    """(line number, record) for every non-blank line; ValueError naming file:line on bad JSON.
    With torn_ok, an unparseable last line without newline (a killed writer) is skipped."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            if torn_ok and n == len(lines):
                log.warning("%s:%d: skipping a torn last line (a writer was killed mid-line)", path, n)
                return
            raise ValueError(f"{path}:{n}: bad JSON: {e}") from None


def read_jsonl(path):
    return [record for _, record in jsonl_lines(path, torn_ok=True)]


def write_atomic(path, text):
    """Write a whole file through a temporary one, so a reader never sees half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- validation

def validate_trajectory(traj):
    """Raise ValueError saying what is wrong with a trajectory dict."""
    if not isinstance(traj, dict):
        raise ValueError(f"expected a JSON object, got {type(traj).__name__}")
    for field, kind in FIELDS.items():
        if field not in traj:
            raise ValueError(f"missing field {field!r}")
        if not isinstance(traj[field], kind) or kind != bool and isinstance(traj[field], bool):
            raise ValueError(f"field {field!r}: expected {getattr(kind, '__name__', 'a number')}, "
                             f"got {traj[field]!r:.80}")
    if traj["source"] not in SOURCES:
        raise ValueError(f"field 'source': expected one of {SOURCES}, got {traj['source']!r}")
    messages = traj["messages"]
    for i, m in enumerate(messages):
        validate_message(m, f"messages[{i}]")
    validate_roles([m["role"] for m in messages])


def validate_message(m, where):
    if not isinstance(m, dict):
        raise ValueError(f"{where}: expected an object, got {m!r:.80}")
    kinds = {"role": str, "content": str, "loss": bool, "error": bool, "taken_back": bool,
             "reflection": str, "thought": str, "action": str, "facts": dict}
    for field in ("role", "content", "loss"):
        if field not in m:
            raise ValueError(f"{where}: missing field {field!r}")
    for field, kind in kinds.items():
        if field in m and not isinstance(m[field], kind):
            raise ValueError(f"{where}.{field}: expected {kind.__name__}, got {m[field]!r:.80}")
    if m["role"] not in ("system", "user", "assistant"):
        raise ValueError(f"{where}.role: expected system, user or assistant, got {m['role']!r}")
    if m["loss"] and m["role"] != "assistant":
        raise ValueError(f"{where}.loss: only assistant messages are trained, this is a {m['role']} message")
    if "reflection" in m and not {"thought", "action"} <= set(m):
        raise ValueError(f"{where}: a corrected turn needs 'thought' and 'action' besides 'reflection'")
    if "thought" in m and "action" not in m:
        raise ValueError(f"{where}: a turn with a 'thought' field needs its 'action' too")


def validate_roles(roles):
    """Optional system, then user/assistant alternating, ending on assistant."""
    start = 1 if roles[:1] == ["system"] else 0
    for i, role in enumerate(roles[start:], start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"messages[{i}].role: expected {expected} (optional system, then user and "
                             f"assistant alternating), got {role!r}")
    if len(roles) == start or roles[-1] != "assistant":
        raise ValueError(f"messages: a trajectory ends on an assistant message, this one ends on "
                         f"{roles[-1] if roles else 'nothing'!r}")


def marked_for_training(record):
    """Synthesis writes every episode and marks the successful ones `"train": true`; others (golden
    data) carry no mark and are trained on."""
    return record.get("train", True) is not False


def load_trajectories(path, keep=lambda record: True):
    """The trajectories of a JSONL file that `keep` accepts, each validated; ValueError naming
    file:line and the problem."""
    trajectories = []
    for n, record in jsonl_lines(path, torn_ok=False):
        if not keep(record):
            continue
        try:
            validate_trajectory(record)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
        trajectories.append(record)
    return trajectories


# ----------------------------------------------------------------------------- ETO / ShareGPT

ETO_ROLES = {"human": "user", "gpt": "assistant"}


def eto_to_trajectory(record, env):
    if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("conversations"), list):
        raise ValueError("expected an object with 'id' and a list 'conversations'")
    messages = []
    for i, turn in enumerate(record["conversations"]):
        if not isinstance(turn, dict) or turn.get("from") not in ETO_ROLES or not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{i}]: expected {{'from': 'human' | 'gpt', 'value': str}}, got {turn!r:.80}")
        role = ETO_ROLES[turn["from"]]
        messages.append({"role": role, "content": turn["value"], "loss": role == "assistant"})
    traj = {"id": str(record["id"]), "env": env, "task": str(record["id"]), "split": "train",
            "source": "golden", "messages": messages, "reward": 1.0, "success": True}
    validate_trajectory(traj)
    return traj


# ALFWorld before 0.4 (ETO's data, AgentGym's) places an object with "put X in/on Y"; alfworld 0.4.2,
# which this project plays, only understands "move X to Y".
OLD_ALFWORLD_PUT = re.compile(r"^(?:Action:\s*)?put .+ in/on ", re.M)


def convert_eto(records, env, where=None):
    """ETO's golden trajectories ({"id", "conversations": [{"from", "value"}]}) in our format.
    `where` names each record in errors (default: its index). ALFWorld data in the grammar of
    alfworld 0.3.x ("put X in/on Y") gets a warning: the engine here rejects those commands."""
    out = []
    for i, record in enumerate(records):
        try:
            out.append(eto_to_trajectory(record, env))
        except ValueError as e:
            raise ValueError(f"{where[i] if where else f'ETO record {i}'}: {e}") from None
    old = sum(any(m["role"] == "assistant" and OLD_ALFWORLD_PUT.search(m["content"]) for m in t["messages"])
              for t in out)
    if env == "alfworld" and old:
        log.warning("%d of %d ALFWorld trajectories place objects with \"put X in/on Y\", alfworld 0.3.x's grammar: "
                    "alfworld 0.4.2 (played here) answers \"Nothing happens.\" to it and says \"move X to Y\"; "
                    "a student trained on them learns a command the engine rejects", old, len(out))
    return out


def load_eto(path, env):
    """An ETO file, a JSON list (as ETO ships it) or JSONL, converted; errors name file and line."""
    with open(path, "rb") as f:
        is_list = f.read().lstrip()[:1] == b"["
    if not is_list:
        located = list(jsonl_lines(path, torn_ok=False))
        return convert_eto([r for _, r in located], env, [f"{path}:{n}" for n, _ in located])
    with open(path, encoding="utf-8") as f:
        try:
            records = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: bad JSON: {e}") from None
    return convert_eto(records, env, [f"{path}: record {i}" for i in range(len(records))])


# ----------------------------------------------------------------------------- chat encoding

def dialog_turns(messages):
    """(system text or None, [(user text, assistant message or None)])."""
    roles = [m["role"] for m in messages]
    system = messages[0]["content"] if roles[:1] == ["system"] else None
    rest = messages[system is not None:]
    if not rest or any(m["role"] != ("user", "assistant")[i % 2] for i, m in enumerate(rest)):
        raise ValueError(f"expected an optional system message, then user and assistant messages "
                         f"alternating; got roles {roles}")
    return system, [(rest[i]["content"], rest[i + 1] if i + 1 < len(rest) else None)
                    for i in range(0, len(rest), 2)]


def special(tok, piece):
    """The id of a special token of the chat format; the error says when the vocabulary has none."""
    try:
        return tok.token_id(piece)
    except KeyError as e:
        raise ValueError(f"chat format {tok.chat_format!r}: {e.args[0]} (is --chat-format right?)") from None


def end_of_turn_id(tok):
    """The token that ends an assistant turn: trained with the reply, and where generation stops."""
    if tok.chat_format == "llama2":
        return tok.eos_id
    return special(tok, EOT if tok.chat_format == "llama3" else IM_END)


def llama2_user(user, system):
    """Meta's LLaMA-2 format folds the system message into the first user message."""
    return (user if system is None else B_SYS + system + E_SYS + user).strip()


def llama3_message(tok, role, content):
    return [special(tok, START_HEADER)] + tok.encode(role) + [special(tok, END_HEADER)] + \
        tok.encode("\n\n" + content.strip()) + [special(tok, EOT)]


def chatml_message(tok, role, content):
    return [special(tok, IM_START)] + tok.encode(f"{role}\n{content}") + [special(tok, IM_END)] + tok.encode("\n")


def encode_user(tok, user, system=None, first=True):
    """Ids of a user turn up to where the assistant's reply begins (what the model sees before it
    replies), with the system message (given with the first turn) and BOS where the format puts them.
    Text between special tokens is one segment, encoded as the reference tokenizes the rendered chat;
    the reply header is a segment of its own, since the model generates the reply after it."""
    if tok.chat_format == "llama2":
        return tok.encode(f"{B_INST} {llama2_user(user, system)} {E_INST}", bos=True)
    if tok.chat_format == "llama3":
        opening = tok.encode("", bos=first)  # BOS before the first message only
        opening += llama3_message(tok, "system", system) if system is not None else []
        reply_header = [special(tok, START_HEADER)] + tok.encode("assistant") + [special(tok, END_HEADER)]
        return opening + llama3_message(tok, "user", user) + reply_header + tok.encode("\n\n")
    opening = chatml_message(tok, "system", system) if system is not None else []
    return opening + chatml_message(tok, "user", user) + [special(tok, IM_START)] + tok.encode("assistant\n")


def encode_reply(tok, content):
    """(the reply's content and end-of-turn token: what is trained, what the format writes after it)."""
    if tok.chat_format == "llama2":
        return tok.encode(f"{content.strip()} ") + [end_of_turn_id(tok)], []
    if tok.chat_format == "llama3":
        return tok.encode(content.strip()) + [end_of_turn_id(tok)], []
    return tok.encode(content) + [end_of_turn_id(tok)], tok.encode("\n")


def encode_pair(tok, user, reply, system=None, first=True):
    """Ids and labels of one user turn and the assistant's reply (reply None: the user turn alone).
    Labels cover the reply and its end-of-turn token when reply["loss"], nothing else. The user turn
    is encoded on its own, so the prompt the agent sees is a prefix of the ids it was trained on."""
    prompt = encode_user(tok, user, system, first)
    if reply is None:
        return prompt, [IGNORE_INDEX] * len(prompt)
    answer, after = encode_reply(tok, reply["content"])
    if tok.chat_format == "llama2":  # Meta encodes the pair as one string: it must give the same tokens
        whole = tok.encode(f"{B_INST} {llama2_user(user, system)} {E_INST} {reply['content'].strip()} ",
                           bos=True, eos=True)
        if whole != prompt + answer:
            raise ValueError(f"the tokenizer merges tokens across {E_INST!r}: the pair's tokens are not the prompt's "
                             f"followed by the reply's, so the prompt is no prefix (user {user[-60:]!r})")
    trained = answer if reply["loss"] else [IGNORE_INDEX] * len(answer)
    return prompt + answer + after, [IGNORE_INDEX] * len(prompt) + trained + [IGNORE_INDEX] * len(after)


def encode_turns(tok, messages):
    """(ids, labels) per user turn with its reply, in tok.chat_format; a last user turn without a
    reply is the prompt alone."""
    system, turns = dialog_turns(messages)
    return [encode_pair(tok, user, reply, system if i == 0 else None, first=i == 0)
            for i, (user, reply) in enumerate(turns)]


def encode_pairs(tok, messages):
    pairs = encode_turns(tok, messages)
    if messages[-1]["role"] != "assistant":
        raise ValueError("the messages end on a user message: nothing to train (encode_prompt is for inference)")
    return pairs


def pairs_that_fit(pairs, max_len):
    total, n = 0, 0
    for ids, _ in pairs:
        total += len(ids)
        if max_len is not None and total > max_len:
            break
        n += 1
    return n


def join_pairs(pairs):
    return [i for ids, _ in pairs for i in ids], [label for _, labels in pairs for label in labels]


def encode_prompt(tok, messages):
    """The ids the model sees before it replies to the last (user) message."""
    pairs = encode_turns(tok, messages)
    if messages[-1]["role"] != "user":
        raise ValueError("encode_prompt: the messages must end on a user message")
    return join_pairs(pairs)[0]


# ----------------------------------------------------------------------------- training samples

REFLECTION_PLACEMENTS = ("line", "thought")


def apply_variant(traj, mask_errors=True, reflection=True, placement="line"):
    """What is trained of a stored trajectory: error steps masked or not; corrections with their
    reflection on a line of its own before the thought (placement "line", as stored), at the start
    of the thought ("thought"), or without it (reflection False). Golden trajectories pass through
    unchanged. Returns a new dict."""
    if placement not in REFLECTION_PLACEMENTS:
        raise ValueError(f"reflection placement must be one of {REFLECTION_PLACEMENTS}, got {placement!r}")
    out = copy.deepcopy(traj)
    if out["source"] == "golden":
        return out
    for m in out["messages"]:
        if m.get("error"):
            m["loss"] = not mask_errors
        if "reflection" in m and not reflection:
            m["content"] = render_turn(m["action"], m["thought"])
            del m["reflection"]
        elif "reflection" in m and placement == "thought":
            m["content"] = render_turn(m["action"], f"{m['reflection']} {m['thought']}")
    return out


def build_samples(tok, trajectories, max_len, mask_errors=True, reflection=True, placement="line"):
    """(ids, labels) per trajectory, with what was truncated (at a pair boundary) or dropped."""
    samples, truncated, drops = [], 0, Counter()
    for traj in tqdm(trajectories, desc="encoding", unit="traj", leave=False):
        try:
            pairs = encode_pairs(tok, apply_variant(traj, mask_errors, reflection, placement)["messages"])
        except ValueError as e:
            raise ValueError(f"trajectory {traj.get('id')!r}: {e}") from None
        kept = pairs_that_fit(pairs, max_len)
        ids, labels = join_pairs(pairs[:kept])
        if kept == 0:
            drops["first pair longer than max_len"] += 1
        elif all(label == IGNORE_INDEX for label in labels):
            drops["no trainable token" + " within max_len" * (kept < len(pairs))] += 1
        else:
            truncated += kept < len(pairs)
            samples.append((ids, labels))
    stats = {"trajectories": len(trajectories), "samples": len(samples), "truncated": truncated,
             "dropped": sum(drops.values()), "drop_reasons": dict(drops),
             "tokens": sum(len(ids) for ids, _ in samples),
             "trainable_tokens": sum(label != IGNORE_INDEX for _, labels in samples for label in labels)}
    if truncated or drops:
        log.warning("%d of %d trajectories truncated at a pair boundary to max_len %s; %d dropped %s",
                    truncated, len(trajectories), max_len, stats["dropped"], dict(drops))
    return samples, stats


# ----------------------------------------------------------------------------- batching

def length_grouped_batches(lengths, batch_tokens, seed, max_padding=0.04):
    """Batches of sample indices, len(batch) * longest <= batch_tokens (a longer sample goes alone).

    Samples are taken in length order (ties at random) and a batch is closed early rather than let
    its padding pass max_padding, so the padding fraction stays below it whatever the budget.
    Batch order is shuffled with `seed`."""
    rng = random.Random(seed)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, batch, real = [], [], 0
    for i in order:  # ascending, so sample i would be the batch's longest
        padded = (len(batch) + 1) * lengths[i]
        if batch and (padded > batch_tokens or padded - real - lengths[i] > max_padding * padded):
            batches.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def padding_fraction(batches, lengths):
    """Padding tokens / all tokens of the padded batches."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / padded if padded else 0.0


def collate(samples, pad_id=0):
    """[(ids, labels)] -> right-padded LongTensors [B, T]; labels IGNORE_INDEX on padding."""
    T = max(len(ids) for ids, _ in samples)
    ids = torch.full((len(samples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), T), IGNORE_INDEX, dtype=torch.long)
    for b, (sample_ids, sample_labels) in enumerate(samples):
        ids[b, :len(sample_ids)] = torch.tensor(sample_ids, dtype=torch.long)
        labels[b, :len(sample_labels)] = torch.tensor(sample_labels, dtype=torch.long)
    return ids, labels
