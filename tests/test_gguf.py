"""convert-gguf on the real SmolLM2-135M-Instruct GGUF (Q4_1 and Q8_0 tensors) against transformers' own
GGUF loading (which needs the `gguf` and `accelerate` packages): equal logits, equal token ids, equal
greedy tokens. The 135M model runs in fp32 on the CPU: a few short prompts keep this fast."""
import re

import gguf
import numpy as np
import pytest
import torch
import transformers

import step
from convert_gguf import convert_gguf, unpermute_rotary
from data import encode_prompt
from model import generate, load_model, load_tokenizer
from rollout import make_policy
from smollm2_fixture import smollm2_gguf

TEXTS = ["Thought: the kitchen has a stove.\nAction: go to kitchen",
         "This room is called the hallway. You see: 3 apples, 120 degrees, a door (that is open)\n\n\tend",
         "naïve émigré ☃ 'll've  spaces   and <|im_start|>user\nspecial<|im_end|>"]
CHATS = [[{"role": "system", "content": "You are a helpful agent.", "loss": False},
          {"role": "user", "content": "What is the capital of France?", "loss": False}],
         [{"role": "system", "content": "You are a helpful agent.", "loss": False},
          {"role": "user", "content": "What is 2+2? Answer with a number only.", "loss": False}]]
LOGITS_TOLERANCE = 1e-4  # both dequantize the same Q4_1/Q8_0 blocks to fp32; observed: 0.0


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    smollm2_gguf()  # installed, else a clear failure
    out = tmp_path_factory.mktemp("smollm2") / "model"
    step.main(["convert-gguf", "--out", str(out)])  # without FILE: the installed package's GGUF
    return out


@pytest.fixture(scope="module")
def reference():
    """transformers' model and tokenizer read from the GGUF itself."""
    path = smollm2_gguf()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    return model, transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.mark.slow
def test_converted_directory(converted):
    assert sorted(p.name for p in converted.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                          "tokenizer.json", "tokenizer_config.json"]
    assert [p.name for p in converted.parent.iterdir()] == ["model"]  # no temporary left behind
    args = load_model(converted).args
    shape = (args.dim, args.n_layers, args.n_heads, args.n_kv_heads, args.head_dim, args.hidden_dim)
    assert shape == (576, 30, 9, 3, 64, 1536)
    assert (args.vocab_size, args.tie_embeddings, args.rope_theta, args.bos_id, args.eos_id) == (49152, True, 1e5, 1, 2)


@pytest.mark.slow
def test_token_ids_equal_transformers(converted, reference):
    tok, (_, reference_tok) = load_tokenizer(converted), reference
    assert tok.chat_format == "chatml"
    ours_in_transformers = transformers.AutoTokenizer.from_pretrained(converted)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == reference_tok.encode(text, add_special_tokens=False) == ours_in_transformers.encode(text)
        assert tok.decode(ids) == text.replace("<|im_start|>", "").replace("<|im_end|>", "")  # specials dropped
    assert tok.encode(TEXTS[2])[-5:] == [1, 4093, 198, 19159, 2]  # <|im_start|> user \n special <|im_end|>


@pytest.mark.slow
def test_logits_equal_transformers(converted, reference):
    tok, (reference_model, _) = load_tokenizer(converted), reference
    ids = torch.tensor([tok.encode(TEXTS[0] + TEXTS[1])])
    ours = load_model(converted).eval()
    again = transformers.AutoModelForCausalLM.from_pretrained(converted).eval()
    with torch.no_grad():
        expected = reference_model(ids).logits
        assert (ours(ids) - expected).abs().max().item() <= LOGITS_TOLERANCE
        assert (again(ids).logits - expected).abs().max().item() <= LOGITS_TOLERANCE
        assert expected.std() > 1  # real logits, not a degenerate model


@pytest.mark.slow
def test_greedy_tokens_equal_transformers(converted, reference):
    """model.py's generate, and the agent's policy, against transformers' greedy generate; both stop at
    ChatML's <|im_end|>."""
    tok, (reference_model, _) = load_tokenizer(converted), reference
    ours = load_model(converted).eval()
    prompts = [encode_prompt(tok, chat) for chat in CHATS]
    budget = 16
    expected = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = reference_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget,
                                       do_sample=False, eos_token_id=2, pad_token_id=2)
        expected.append(out[0, len(prompt):].tolist())
    assert [generate(ours, [p], budget, eos_id=-1)[0][:len(e)] for p, e in zip(prompts, expected)] == expected
    assert 2 in expected[1]  # the short reply ends on <|im_end|> within the budget...
    replies = make_policy(ours, tok, budget)(CHATS, ["a", "b"])
    assert replies == [tok.decode(e[:e.index(2)] if 2 in e else e) for e in expected]  # ...and the policy stops there
    assert replies[1].strip() and len(tok.encode(replies[1])) < budget


def llama_cpp_permute(w, n_heads):
    """llama.cpp's convert_hf_to_gguf.py reorders q and k rows per head like this (written from its description)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("n_heads", [1, 3, 9])
def test_unpermute_undoes_llama_cpp(n_heads):
    w = np.arange(n_heads * 8 * 5, dtype=np.float32).reshape(n_heads * 8, 5)
    assert np.array_equal(unpermute_rotary(llama_cpp_permute(w, n_heads), n_heads), w)
    head = llama_cpp_permute(w, n_heads)[:8, 0].tolist()  # interleaved pairs (i, i + D/2) in llama.cpp's layout
    assert head == [0, 20, 5, 25, 10, 30, 15, 35]


def write_gguf(path, arch="llama", tokenizer="gpt2", extra_tensor=None):
    """A tiny GGUF with what the converter checks first."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in [("block_count", 1), ("embedding_length", 8), ("feed_forward_length", 16),
                       ("attention.head_count", 2), ("context_length", 64)]:
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_tokenizer_model(tokenizer)
    writer.add_token_list(["a", "b", "ab"])
    writer.add_token_types([1, 1, 1])
    writer.add_token_merges(["a b"])
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), dtype=np.float32))
    if extra_tensor:
        writer.add_tensor(extra_tensor, np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("options, error", [
    (dict(arch="qwen2"), "general.architecture is 'qwen2'; only 'llama'"),
    (dict(tokenizer="llama"), "tokenizer.ggml.model is 'llama'; only byte-level BPE"),
    (dict(extra_tensor="rope_freqs.weight"), "tensor 'rope_freqs.weight' has no place"),
])
def test_refusals_name_the_file_and_field(tmp_path, options, error):
    path = write_gguf(tmp_path / "tiny.gguf", **options)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {error}")):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
