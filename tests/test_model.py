import json

import pytest
import torch
import transformers

import model
from model import CachedDecoder, ModelArgs, Tokenizer, Transformer, generate, load_model, save_model


def hf_llama(seed=0, family="llama", **overrides):
    """A tiny random transformers LLaMA (or Qwen2), the numerical reference."""
    config = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=256, max_position_embeddings=512, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config.update(overrides)
    torch.manual_seed(seed)
    model_class, config_class = {"llama": (transformers.LlamaForCausalLM, transformers.LlamaConfig),
                                 "qwen2": (transformers.Qwen2ForCausalLM, transformers.Qwen2Config)}[family]
    reference = model_class(config_class(**config)).eval()
    with torch.no_grad():  # random norms and biases too, so a swapped or skipped one would show
        for name, p in reference.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.uniform_(-0.5, 0.5)
    return reference


def tokens(batch=2, length=24, vocab=256, seed=1):
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_diff(ours, reference_model, ids):
    with torch.no_grad():
        return (ours(ids) - reference_model(ids).logits).abs().max().item()


CONFIGS = {
    "mha": {},
    "gqa": dict(num_key_value_heads=2),
    "tied": dict(tie_word_embeddings=True),
    "rope_theta": dict(rope_theta=500000.0, num_key_value_heads=1),
    "llama3_scaling": dict(rope_theta=500000.0, num_key_value_heads=2, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16)),
    "attention_bias": dict(attention_bias=True, num_key_value_heads=2),
    "qwen2": dict(family="qwen2", num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen2_tied": dict(family="qwen2", num_key_value_heads=1, tie_word_embeddings=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_transformers(tmp_path, name):
    reference = hf_llama(**CONFIGS[name])
    reference.save_pretrained(tmp_path)
    ours = load_model(tmp_path).eval()
    assert ours.args.tie_embeddings == CONFIGS[name].get("tie_word_embeddings", False)
    assert max_diff(ours, reference, tokens(length=40)) <= 1e-4


@pytest.mark.parametrize("name", ["attention_bias", "qwen2"])
def test_attention_biases_are_loaded_and_saved(tmp_path, name):
    """Qwen2 biases q, k and v; LLaMA's attention_bias also o. Saved, the model loads in transformers
    as the same family with the same logits."""
    reference = hf_llama(**CONFIGS[name])
    reference.save_pretrained(tmp_path / "reference")
    ours = load_model(tmp_path / "reference").eval()
    biased = sorted(n.split(".")[-2] for n, _ in ours.layers[0].named_parameters() if n.endswith(".bias"))
    expected = {"attention_bias": ["k_proj", "o_proj", "q_proj", "v_proj"], "qwen2": ["k_proj", "q_proj", "v_proj"]}
    assert biased == expected[name]
    with torch.no_grad():  # the biases matter: without them the logits move
        unbiased = ours(tokens())
        for n, p in ours.named_parameters():
            if n.endswith(".bias"):
                p.zero_()
        assert (unbiased - ours(tokens())).abs().max() > 0.1
    ours = load_model(tmp_path / "reference").eval()
    save_model(ours, tmp_path / "ours")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(again) is type(reference)
    assert max_diff(ours, again, tokens(length=40)) <= 1e-4


def test_sharded_checkpoint_loads(tmp_path):
    reference = hf_llama(num_key_value_heads=2)
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    assert max_diff(load_model(tmp_path).eval(), reference, tokens()) <= 1e-4


@pytest.mark.parametrize("tied", [False, True])
def test_save_model_loads_in_transformers(tmp_path, tied):
    torch.manual_seed(0)
    ours = Transformer(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256,
                                 hidden_dim=160, rope_theta=20000.0, tie_embeddings=tied)).eval()
    save_model(ours, tmp_path / "out")
    reference = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert max_diff(ours, reference, tokens()) <= 1e-4


def test_save_model_shards_and_round_trips(tmp_path):
    torch.manual_seed(0)
    ours = Transformer(ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=256, hidden_dim=160)).eval()
    save_model(ours, tmp_path / "out", max_shard_bytes=50_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    again = load_model(tmp_path / "out")
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))
    reference = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert max_diff(ours, reference, tokens()) <= 1e-4


def test_save_model_replaces_atomically(tmp_path):
    torch.manual_seed(0)
    ours = Transformer(ModelArgs(dim=32, n_layers=1, n_heads=2, vocab_size=64, hidden_dim=64))
    save_model(ours, tmp_path / "out")
    (tmp_path / "extra.txt").write_text("kept")
    save_model(ours, tmp_path / "out", files=[tmp_path / "extra.txt"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "extra.txt", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_missing_tensor_is_named(tmp_path):
    hf_llama().save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing tensors: \['model.layers.1.mlp.up_proj.weight'\]"):
        load_model(tmp_path)


def test_wrong_shape_and_unexpected_tensor_are_named(tmp_path):
    hf_llama().save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file
    state = load_file(tmp_path / "model.safetensors")
    state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 64)
    state["model.layers.0.self_attn.rotary.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as error:
        load_model(tmp_path)
    assert "model.layers.0.self_attn.k_proj.weight: (32, 64) instead of (64, 64)" in str(error.value)
    assert "unexpected tensors: ['model.layers.0.self_attn.rotary.weight']" in str(error.value)


def test_config_fields_and_refusals():
    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, intermediate_size=128)
    args = ModelArgs.from_hf_config(base)
    assert (args.n_kv_heads, args.head_dim, args.rope_theta, args.tie_embeddings) == (4, 16, 10000.0, False)
    v5 = ModelArgs.from_hf_config({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert v5.rope_theta == 1e6 and v5.rope_scaling is None
    assert ModelArgs.from_hf_config({**base, "eos_token_id": [128001, 128009]}).eos_id == 128001
    with pytest.raises(ValueError, match="unsupported rope_scaling.*linear"):
        ModelArgs.from_hf_config({**base, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert ModelArgs.from_hf_config({**base, "attention_bias": True}).o_bias
    assert not ModelArgs.from_hf_config({**base, "model_type": "qwen2"}).o_bias
    with pytest.raises(ValueError, match="model_type 'qwen3' is not supported"):
        ModelArgs.from_hf_config({**base, "model_type": "qwen3"})
    with pytest.raises(ValueError, match="use_sliding_window"):
        ModelArgs.from_hf_config({**base, "model_type": "qwen2", "use_sliding_window": True})
    with pytest.raises(ValueError, match="mlp_bias"):
        ModelArgs.from_hf_config({**base, "mlp_bias": True})
    with pytest.raises(ValueError, match="hidden_act"):
        ModelArgs.from_hf_config({**base, "hidden_act": "gelu"})


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    args = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128, hidden_dim=128)
    return Transformer(ModelArgs(**{**args, **overrides})).eval()


def argmax_loop(m, prompt, n):
    """Uncached reference: rerun the whole sequence for every new token."""
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            ids.append(int(m(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_greedy_equals_uncached_loop():
    m = tiny_model()
    prompt = [1, 17, 23, 99, 4, 5]
    assert generate(m, [prompt], 20, eos_id=-1) == [argmax_loop(m, prompt, 20)]


def test_a_bf16_model_attends_over_an_fp32_cache_on_a_cpu():
    m = tiny_model().to(torch.bfloat16)
    cache = m.new_cache(1)
    assert cache.k[0].dtype == torch.float32
    prompt = [1, 17, 23, 99, 4, 5]
    with torch.no_grad():
        cached, uncached = m(torch.tensor([prompt]), cache), m(torch.tensor([prompt]))
    assert cached.dtype == torch.bfloat16 and torch.allclose(cached.float(), uncached.float(), atol=0.05)


def test_left_padded_batch_equals_each_prompt_alone():
    m = tiny_model()
    prompts = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 40], [1, 70, 71, 72]]
    alone = [generate(m, [p], 12, eos_id=-1)[0] for p in prompts]
    assert generate(m, prompts, 12, eos_id=-1) == alone
    with torch.no_grad():  # the uncached forward with a padding mask agrees as well
        ids, valid = model.left_pad(prompts, "cpu")
        last = m(ids, valid=valid)[:, -1].argmax(-1).tolist()
    assert last == [a[0] for a in alone]


def test_each_row_computes_its_own_prompt_tokens_not_the_longest_rows(monkeypatch):
    """A long new prompt beside short ones (an agent's new episode beside observations) is fed on its
    own: the batch computes each row's tokens once, not every row padded to the longest."""
    m = tiny_model()
    prompts = [list(range(3, 43)), [1, 40], [1, 70, 71]]
    alone = [generate(m, [p], 4, eos_id=-1)[0] for p in prompts]
    computed, forward = [], m.forward
    monkeypatch.setattr(m, "forward", lambda tokens, *a, **k: computed.append(tokens.numel()) or forward(tokens, *a, **k))
    assert generate(m, prompts, 4, eos_id=-1) == alone
    # what makes a prompt longer than the shortest (38 + 0 + 1) alone, then the last 2 tokens of each
    # row, then 3 batched steps of one token a row
    assert computed == [38, 1, 3 * 2, 3, 3, 3]  # left-padded: [3 * 40, 3, 3, 3]


def test_each_sequence_stops_on_its_own():
    m = tiny_model()
    prompts = [[1, 5, 6], [1, 40, 41, 42]]
    free = generate(m, prompts, 10, eos_id=-1)
    eos = free[0][3]  # pretend the 4th token of the first row is EOS
    out = generate(m, prompts, 10, eos_id=eos)
    assert out[0] == free[0][:free[0].index(eos)]
    assert out[1] == (free[1][:free[1].index(eos)] if eos in free[1] else free[1])


def test_cached_decoder_reuses_history_and_matches_fresh_generation():
    m = tiny_model()
    decoder = CachedDecoder(m)
    histories = {"a": [1, 5, 6, 7], "b": [1, 9]}
    for turn in range(3):
        keys = list(histories)
        prompts = [histories[k] for k in keys]
        replies = decoder.generate(keys, prompts, 6)
        assert replies == generate(m, prompts, 6)
        for k, reply in zip(keys, replies):
            histories[k] = histories[k] + reply + [2, 1, 30 + turn, 31]
        if turn == 1:  # an episode ends and a new one starts in its place
            del histories["a"]
            histories["c"] = [1, 50, 51, 52, 53, 54]
    assert decoder.keys == ["b", "c"]
    assert decoder.cache.tokens_per_row().tolist() == [len(i) for i in decoder.ids]


def test_a_new_episode_copies_the_cached_prefix_it_shares_instead_of_computing_it():
    m = tiny_model()
    decoder = CachedDecoder(m)
    computed = []  # token slots each forward computes
    m.embed_tokens.register_forward_hook(lambda module, args, out: computed.append(args[0].numel()))
    system = list(range(3, 43))  # a 40-token system prompt every episode starts with
    first = decoder.generate(["a"], [system + [50, 51]], 4)
    computed.clear()
    prompts = [system + [50, 51] + first[0] + [60], system + [70, 71, 72]]
    replies = decoder.generate(["a", "b"], prompts, 4)
    computed_by_decoder = list(computed)
    assert replies == generate(m, prompts, 4)
    # "b" starts from a copy of "a"'s 40 shared tokens and computes its 3 own, not 43: one alone, two beside
    # "a"'s 2 new ones (a reply's last token and the observation), then 3 decode steps of both rows
    assert computed_by_decoder == [1, 2 * 2, 2, 2, 2]
    assert decoder.cache.tokens_per_row().tolist() == [len(i) for i in decoder.ids]


def test_gradient_checkpointing_same_gradients():
    m = tiny_model().train()
    ids = tokens(2, 16, 128)
    grads = []
    for ckpt in (False, True):
        m.zero_grad()
        m.grad_ckpt = ckpt
        m(ids).logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_tokenizer_round_trip_and_special_ids(tmp_path):
    texts = ["Thought: the door is open.\nAction: go to kitchen", "You see a red apple 42 and a mug."] * 30
    tok = model.train_tokenizer(texts, tmp_path / "tok.model", vocab_size=400)
    again = Tokenizer(tmp_path / "tok.model")
    text = "Action: go to kitchen\n  You see 42 apples."
    ids = again.encode(text)
    assert again.decode(ids) == text and ids == tok.encode(text)
    assert (again.bos_id, again.eos_id) == (1, 2)
    assert 300 < again.vocab_size == tok.vocab_size <= 400  # a small corpus may not fill the requested size
    assert again.encode(text, bos=True, eos=True) == [1] + ids + [2]
    assert again.decode(again.encode("naïve ☃")) == "naïve ☃"  # byte fallback covers unseen characters
