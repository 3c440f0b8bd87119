"""A hand-written LLaMA (and Qwen2, which adds biases to the q/k/v projections): Hugging Face
checkpoint loading and saving, the checkpoint's tokenizer (sentencepiece `tokenizer.model` or
`tokenizer.json`) with its chat format, and batched generation with an explicit KV cache.

Shapes: B batch, T new tokens, S cached slots, H query heads, K key/value heads, D head dim.
"""
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import sentencepiece as spm
import tokenizers
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.checkpoint import checkpoint


CHAT_FORMATS = ("llama2", "llama3", "chatml")
# What each format writes around a message, so a chat template names its format by containing it.
CHAT_TEMPLATE_MARKERS = {"chatml": "<|im_start|>", "llama3": "<|start_header_id|>", "llama2": "[INST]"}


class Tokenizer:
    """A sentencepiece `tokenizer.model`, as LLaMA-2 ships it."""

    def __init__(self, path, chat_format="llama2"):
        self.path = str(path)
        self.sp = spm.SentencePieceProcessor(model_file=self.path)
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.vocab_size = self.sp.vocab_size()
        self.chat_format = chat_format

    def encode(self, text, bos=False, eos=False):
        ids = self.sp.encode(text)
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids):
        return self.sp.decode(list(ids))

    def token_id(self, piece):
        """The id of a piece of the vocabulary (a special token); KeyError when it has none."""
        token = self.sp.piece_to_id(piece)
        if token == self.sp.unk_id() and piece != self.sp.id_to_piece(token):
            raise KeyError(f"{self.path}: no token {piece!r} in the vocabulary")
        return token


class HFTokenizer:
    """A `tokenizer.json` (the byte-level BPE of LLaMA-3, Qwen2.5, SmolLM2...), read with the
    `tokenizers` library; the same interface as Tokenizer. Special tokens written in the text
    (e.g. "<|im_end|>") become their ids, as in transformers; decoding drops them, as sentencepiece does."""

    def __init__(self, path, bos_token=None, eos_token=None, chat_format=None):
        self.path = str(path)
        self.tk = tokenizers.Tokenizer.from_file(self.path)
        self.bos_id = None if bos_token is None else self.token_id(bos_token)
        self.eos_id = None if eos_token is None else self.token_id(eos_token)
        self.vocab_size = self.tk.get_vocab_size(with_added_tokens=True)
        self.chat_format = chat_format

    def encode(self, text, bos=False, eos=False):
        for wanted, token, name in ((bos, self.bos_id, "BOS"), (eos, self.eos_id, "EOS")):
            if wanted and token is None:
                raise ValueError(f"{self.path}: tokenizer_config.json names no {name} token")
        ids = self.tk.encode(text, add_special_tokens=False).ids
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids):
        return self.tk.decode(list(ids), skip_special_tokens=True)

    def token_id(self, piece):
        token = self.tk.token_to_id(piece)
        if token is None:
            raise KeyError(f"{self.path}: no token {piece!r} in the vocabulary")
        return token


def load_tokenizer(path, chat_format=None):
    """The tokenizer of a checkpoint directory: its sentencepiece `tokenizer.model` when it has one
    (LLaMA-2), else its `tokenizer.json`, with BOS and EOS as tokenizer_config.json names them.
    `chat_format` (one of CHAT_FORMATS) overrides the format the checkpoint's files imply."""
    path = Path(path)
    config = read_json_if_exists(path / "tokenizer_config.json")
    if chat_format is not None and chat_format not in CHAT_FORMATS:
        raise ValueError(f"unknown chat format {chat_format!r}: expected one of {', '.join(CHAT_FORMATS)}")
    if (path / "tokenizer.model").exists():
        tok = Tokenizer(path / "tokenizer.model")
    elif (path / "tokenizer.json").exists():
        tok = HFTokenizer(path / "tokenizer.json", special_token(config, "bos_token"),
                          special_token(config, "eos_token"))
    else:
        raise FileNotFoundError(f"{path}: no tokenizer.model or tokenizer.json")
    tok.chat_format = chat_format or chat_format_of(path, config, tok)
    return tok


def read_json_if_exists(path):
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: bad JSON: {e}") from None


def special_token(config, name):
    """tokenizer_config.json writes a special token as its text or as {"content": text, ...}."""
    token = config.get(name)
    return token.get("content") if isinstance(token, dict) else token


def chat_template(path, config):
    """The checkpoint's chat template: chat_template.jinja (transformers 5 writes it apart), or
    tokenizer_config.json's chat_template (a string, or a list of named templates)."""
    if (path / "chat_template.jinja").exists():
        return (path / "chat_template.jinja").read_text()
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def chat_format_of(path, config, tok):
    """The chat format of a checkpoint: the one its chat template writes, or without a template the
    one its special tokens belong to (a sentencepiece vocabulary without any: LLaMA-2's)."""
    template = chat_template(path, config)
    if template is not None:
        for name, marker in CHAT_TEMPLATE_MARKERS.items():
            if marker in template:
                return name
        raise ValueError(f"{path}: the chat template is none of {', '.join(CHAT_FORMATS)} "
                         "(it writes none of " + ", ".join(CHAT_TEMPLATE_MARKERS.values()) + "); pass --chat-format")
    for name, marker in CHAT_TEMPLATE_MARKERS.items():
        try:
            tok.token_id(marker)
            return name
        except KeyError:
            pass
    if isinstance(tok, Tokenizer):
        return "llama2"
    raise ValueError(f"{path}: no chat template and no special tokens of a known chat format; pass --chat-format")


def train_tokenizer(texts, path, vocab_size):
    """Train a LLaMA-style BPE sentencepiece model on `texts` and write it to `path`."""
    import io
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        hard_vocab_limit=False, minloglevel=2)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return Tokenizer(path)


# ----------------------------------------------------------------------------- configuration

@dataclass
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: Optional[int] = None
    vocab_size: int = 32000
    hidden_dim: int = 11008
    head_dim: Optional[int] = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None  # only LLaMA-3's "llama3" type
    max_seq_len: int = 4096
    tie_embeddings: bool = False
    bos_id: int = 1
    eos_id: int = 2
    model_type: str = "llama"  # or "qwen2": biases on the q, k and v projections
    attention_bias: bool = False  # LLaMA's option: biases on the q, k, v and o projections

    def __post_init__(self):
        if self.model_type not in ("llama", "qwen2"):
            raise ValueError(f"model_type {self.model_type!r} is not supported (only 'llama' and 'qwen2')")
        self.n_kv_heads = self.n_kv_heads or self.n_heads
        self.head_dim = self.head_dim or self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind != "llama3":
                raise ValueError(f"unsupported rope_scaling {self.rope_scaling!r}: only 'llama3' is implemented")

    @property
    def qkv_bias(self):
        return self.attention_bias or self.model_type == "qwen2"

    @property
    def o_bias(self):
        return self.attention_bias and self.model_type == "llama"

    @classmethod
    def from_hf_dir(cls, path):
        return cls.from_hf_config(json.loads((Path(path) / "config.json").read_text()))

    @classmethod
    def from_hf_config(cls, config):
        """Read a Hugging Face LLaMA or Qwen2 config.json; refuse what this forward pass does not implement."""
        refused = {"mlp_bias": True, "use_sliding_window": True}
        for key, bad in refused.items():
            if config.get(key) == bad:
                raise ValueError(f"config.json: {key}={bad} is not supported")
        if config.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act={config['hidden_act']!r} is not supported (only 'silu')")
        rope = dict(config.get("rope_parameters") or {})  # transformers 5 writes theta and scaling here
        rope_theta = config.get("rope_theta", rope.pop("rope_theta", 10000.0))
        scaling = config.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        eos = config.get("eos_token_id", 2)
        return cls(
            dim=config["hidden_size"], n_layers=config["num_hidden_layers"],
            n_heads=config["num_attention_heads"], n_kv_heads=config.get("num_key_value_heads"),
            vocab_size=config["vocab_size"], hidden_dim=config["intermediate_size"],
            head_dim=config.get("head_dim"), norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta), rope_scaling=scaling,
            max_seq_len=config.get("max_position_embeddings", 4096),
            tie_embeddings=config.get("tie_word_embeddings", False),
            bos_id=config.get("bos_token_id", 1), eos_id=eos[0] if isinstance(eos, list) else eos,
            model_type=config.get("model_type", "llama"), attention_bias=bool(config.get("attention_bias", False)))

    def to_hf_config(self, dtype=torch.float32):
        family = {"llama": {"architectures": ["LlamaForCausalLM"], "attention_bias": self.attention_bias},
                  "qwen2": {"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": False}}[self.model_type]
        return {
            **family, "model_type": self.model_type, "hidden_act": "silu",
            "hidden_size": self.dim, "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads, "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim, "intermediate_size": self.hidden_dim,
            "vocab_size": self.vocab_size, "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta, "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_seq_len, "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_id, "eos_token_id": self.eos_id, "mlp_bias": False,
            "torch_dtype": str(dtype).removeprefix("torch."),
        }


# ----------------------------------------------------------------------------- rotary embeddings

def rope_inv_freq(args, device=None):
    """Inverse frequencies of the rotary embedding, with LLaMA-3's long-context rescaling when configured."""
    inv_freq = 1.0 / args.rope_theta ** (torch.arange(0, args.head_dim, 2, device=device).float() / args.head_dim)
    if args.rope_scaling is None:
        return inv_freq
    s = args.rope_scaling
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
    smooth = ((old_len / wavelen - low) / (high - low)).clamp(0, 1)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def rope_cos_sin(inv_freq, positions, dtype):
    angles = positions[..., None].float() * inv_freq  # [B, T, D/2]
    angles = torch.cat([angles, angles], dim=-1)  # [B, T, D], Hugging Face's half-split layout
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]  # [B, 1, T, D]


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


# ----------------------------------------------------------------------------- the network

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.q_proj = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=args.qkv_bias)
        self.k_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=args.qkv_bias)
        self.v_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=args.qkv_bias)
        self.o_proj = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=args.o_bias)

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, K, T, D]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.write(layer, k, v)  # [B, K, S, D]: everything cached so far
            q = q.to(k.dtype)  # a bf16 model's cache on a CPU is fp32 (Transformer.new_cache)
        # Grouped-query attention inside SDPA: no [B, H, S, D] copies of the shared keys and values.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           enable_gqa=self.n_kv_heads != self.n_heads).to(x.dtype)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # [B, T, H*D]


class MLP(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.up_proj = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.down_proj = nn.Linear(args.hidden_dim, args.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = MLP(args)

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """LLaMA with Hugging Face's parameter names (minus the "model." prefix), so checkpoints map 1:1."""

    def __init__(self, args):
        super().__init__()
        self.args = args
        self.grad_ckpt = False  # recompute each block's activations in backward (training only)
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, tokens, cache=None, valid=None, last_only=False, keep=None):
        """tokens [B, T] -> logits [B, T, vocab] ([B, 1, vocab] with last_only; [N, vocab] at the N
        positions that the boolean `keep` [B, T] marks).

        `valid` [B, T] marks real tokens (False on left padding). With a `cache`, the tokens are
        appended to it and attend to everything valid cached before them."""
        B, T = tokens.shape
        if cache is not None:
            positions, mask = cache.append(valid if valid is not None else torch.ones_like(tokens, dtype=torch.bool))
        elif valid is not None:
            positions, mask = positions_and_mask(valid, valid, torch.arange(T, device=tokens.device))
        else:
            positions, mask = torch.arange(T, device=tokens.device).expand(B, T), None
        h = self.embed_tokens(tokens)
        cos, sin = rope_cos_sin(rope_inv_freq(self.args, tokens.device), positions, h.dtype)
        for i, layer in enumerate(self.layers):
            if self.grad_ckpt and self.training and cache is None and torch.is_grad_enabled():
                h = checkpoint(layer, h, cos, sin, mask, use_reentrant=False)
            else:
                h = layer(h, cos, sin, mask, cache, i)
        if last_only:
            h = h[:, -1:]
        elif keep is not None:
            h = h[keep]  # [N, dim]
        return self.lm_head(self.norm(h))

    def new_cache(self, batch_size):
        """A cache in the weights' dtype, but fp32 on a CPU: PyTorch's CPU attention kernel is ~4x slower
        in bf16 than in fp32 when one new token attends to a long cache (bench.py agent)."""
        p = self.lm_head.weight
        return KVCache(self.args, batch_size, torch.float32 if p.device.type == "cpu" else p.dtype, p.device)


def positions_and_mask(key_valid, query_valid, query_slots):
    """Rotary positions of the queries and the boolean attention mask [B, 1, T, S].

    A query attends to valid keys at or before its own slot. Every query also sees its own slot,
    so padding rows are never fully masked (that would give NaN, and NaN times a zero weight still
    poisons the values)."""
    S = key_valid.shape[1]
    slots = torch.arange(S, device=key_valid.device)
    causal = slots[None, :] <= query_slots[:, None]  # [T, S]
    mask = (key_valid[:, None, :] & causal) | (slots[None, :] == query_slots[:, None])  # [B, T, S]
    before = key_valid[:, :query_slots[0]].sum(1, keepdim=True)  # valid tokens already cached
    positions = (before + query_valid.cumsum(1) - 1).clamp(min=0)  # [B, T]
    return positions, mask[:, None]


# ----------------------------------------------------------------------------- KV cache

class KVCache:
    """Keys and values of every layer for a batch of sequences.

    Slot s of row b holds a token when valid[b, s]; slots are shared across rows (one write
    pointer), so left padding and finished rows are simply invalid slots. Keys are stored after
    the rotary embedding, so a row's entries can be moved between slots without recomputation."""

    def __init__(self, args, batch_size, dtype, device):
        shape = (batch_size, args.n_kv_heads, 0, args.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        self.length = 0  # slots in use

    def append(self, new_valid):
        """Reserve slots for new tokens [B, T]; return their positions and attention mask."""
        T = new_valid.shape[1]
        self._grow(self.length + T)
        start = self.length
        self.valid[:, start:start + T] = new_valid
        self.length += T
        query_slots = torch.arange(start, start + T, device=new_valid.device)
        return positions_and_mask(self.valid[:, :self.length], new_valid, query_slots)

    def write(self, layer, k, v):
        T = k.shape[2]
        self.k[layer][:, :, self.length - T:self.length] = k
        self.v[layer][:, :, self.length - T:self.length] = v
        return self.k[layer][:, :, :self.length], self.v[layer][:, :, :self.length]

    def row(self, b):
        """Row b as a cache of its own that shares this one's tensors and slot pointer (views: what it
        writes lands here). Reserve the slots it will append first (reserve): a view cannot grow."""
        view = KVCache.__new__(KVCache)
        view.k, view.v = [t[b:b + 1] for t in self.k], [t[b:b + 1] for t in self.v]
        view.valid, view.length = self.valid[b:b + 1], self.length
        return view

    def reserve(self, slots):
        """Room for this many slots in use, so that appending up to there copies nothing."""
        self._grow(slots)

    def _grow(self, needed):
        capacity = self.valid.shape[1]
        if needed <= capacity:
            return
        extra = max(needed, 2 * capacity) - capacity  # doubling keeps appends amortised O(1)
        pad = lambda t: F.pad(t, (0, 0, 0, extra))  # noqa: E731  (pads the slot dimension)
        self.k, self.v = [pad(t) for t in self.k], [pad(t) for t in self.v]
        self.valid = F.pad(self.valid, (0, extra))

    def tokens_per_row(self):
        return self.valid[:, :self.length].sum(1)

    def truncate_rows(self, keep):
        """Keep the first keep[b] tokens of row b (in slot order); invalidate the rest."""
        valid = self.valid[:, :self.length]
        self.valid[:, :self.length] &= valid.cumsum(1) <= torch.as_tensor(keep, device=valid.device)[:, None]

    def select_rows(self, rows):
        """Reorder rows; -1 makes a new empty row. Copies the slots in use, and nothing when the rows stay."""
        if list(rows) == list(range(self.valid.shape[0])):
            return
        index = torch.as_tensor(rows, device=self.valid.device)
        take = lambda t: torch.cat([t, t.new_zeros((1, *t.shape[1:]))])[index]  # noqa: E731  (row -1 = zeros)
        self.k = [take(t[:, :, :self.length]) for t in self.k]
        self.v = [take(t[:, :, :self.length]) for t in self.v]
        self.valid = take(self.valid[:, :self.length])

    def pack(self):
        """Move each row's valid entries to the right end of the fewest slots (left padding)."""
        valid = self.valid[:, :self.length]
        counts = valid.sum(1)
        new_len = int(counts.max()) if len(counts) else 0
        # Stable sort puts invalid slots first and keeps the valid ones in order.
        order = torch.sort(valid.int(), dim=1, stable=True).indices[:, self.length - new_len:]  # [B, new_len]
        gather = lambda t: t.gather(2, order[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))  # noqa: E731
        self.k = [gather(t[:, :, :self.length]) for t in self.k]
        self.v = [gather(t[:, :, :self.length]) for t in self.v]
        self.valid = valid.gather(1, order)
        self.length = new_len


# ----------------------------------------------------------------------------- checkpoints

def hf_name(name):
    return name if name.startswith("lm_head.") else "model." + name


def read_checkpoint(path, device):
    """All tensors of a Hugging Face checkpoint directory, single-file or sharded."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
    tensors = {}
    for file in files:
        tensors.update(load_file(path / file, device=str(device)))
    return tensors


def load_model(path, device="cpu", dtype=None):
    """Build on the meta device and take the checkpoint's tensors as parameters (no second copy).

    dtype None keeps the checkpoint's own dtype. Missing, unexpected or mis-shaped tensors are an error."""
    args = ModelArgs.from_hf_dir(path)
    tensors = read_checkpoint(path, device)
    state = {name.removeprefix("model."): t if dtype is None else t.to(dtype) for name, t in tensors.items()}
    return model_from_state(args, state, f"{path}: checkpoint does not match config.json")


def model_from_state(args, state, mismatch):
    """A Transformer built on the meta device that takes `state`'s tensors (our names) as its
    parameters, without a second copy; ValueError starting with `mismatch` when a tensor is
    missing, unexpected or of the wrong shape."""
    with torch.device("meta"):
        model = Transformer(args)
    expected = {hf_name(n): p.shape for n, p in model.named_parameters()}  # tied lm_head is listed once
    check_tensors(mismatch, {hf_name(n): t for n, t in state.items()}, expected)
    if args.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if args.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight  # assign=True replaced the shared Parameter
    return model


def check_tensors(mismatch, tensors, expected):
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{n}: {tuple(tensors[n].shape)} instead of {tuple(s)}"
             for n, s in expected.items() if n in tensors and tensors[n].shape != s]
    problems = [f"missing tensors: {missing}"] * bool(missing) + [f"unexpected tensors: {unexpected}"] * bool(unexpected)
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong))
    if problems:
        raise ValueError(f"{mismatch}: " + " | ".join(problems))


def save_model(model, path, files=(), max_shard_bytes=5 * 2**30):
    """config.json + safetensors with Hugging Face names (sharded above max_shard_bytes) + extra
    `files` (e.g. tokenizer.model), written to a temporary directory and renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {hf_name(n): p.detach().contiguous().cpu() for n, p in model.named_parameters()}
    dtype = next(iter(state.values())).dtype
    (tmp / "config.json").write_text(json.dumps(model.args.to_hf_config(dtype), indent=2))
    write_shards(tmp, state, max_shard_bytes)
    for file in files:
        shutil.copy(file, tmp / Path(file).name)
    replace_dir(tmp, path)


def write_shards(directory, state, max_shard_bytes):
    shards, size = [{}], 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], directory / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, directory / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def replace_dir(tmp, path):
    """Swap a finished temporary directory into place; the old one survives until the new one is there."""
    for file in tmp.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- generation

def left_pad(chunks, device):
    T = max(len(c) for c in chunks)
    tokens = torch.zeros(len(chunks), T, dtype=torch.long, device=device)
    valid = torch.zeros(len(chunks), T, dtype=torch.bool, device=device)
    for b, chunk in enumerate(chunks):
        if chunk:
            tokens[b, T - len(chunk):] = torch.tensor(chunk, device=device)
            valid[b, T - len(chunk):] = True
    return tokens, valid


def eos_set(model, eos_id):
    """The ids that end a row: eos_id (one id or several; None: the model's EOS)."""
    eos_id = model.args.eos_id if eos_id is None else eos_id
    return {eos_id} if isinstance(eos_id, int) else set(eos_id)


def prefill_rows(model, cache, chunks):
    """Feeds into `cache` what makes the rows' chunks (new prompt tokens) longer than the shortest one,
    one row at a time; returns the rest, chunks of equal length for one batch without padding. As one
    left-padded batch, every row would compute as many tokens as the longest chunk: an agent's new
    episode brings a ~500-token prompt while the others bring a ~50-token observation (about 3x the
    tokens computed). A row's own tokens take slots of their own, invalid in the other rows, until
    the next CachedDecoder call packs the cache."""
    shortest = max(1, min(len(c) for c in chunks))
    cache.reserve(cache.length + sum(max(len(c) - shortest, 0) for c in chunks))
    for b, chunk in enumerate(chunks):
        if len(chunk) > shortest:
            row = cache.row(b)
            model(torch.tensor([chunk[:-shortest]], device=cache.valid.device), row, last_only=True)
            cache.length = row.length
    return [chunk[-shortest:] for chunk in chunks]


@torch.no_grad()
def decode(model, cache, chunks, max_new_tokens, eos_id=None):
    """Append `chunks` (new prompt tokens per row) to `cache` and decode greedily (argmax).

    Returns every generated token per row, including a final EOS (any of eos_id's ids); the last
    generated token of a row is never fed to the model, so the cache holds the chunk and all
    generated tokens but the last."""
    device = cache.valid.device
    eos_ids = eos_set(model, eos_id)
    tokens, valid = left_pad(prefill_rows(model, cache, chunks), device)
    out = [[] for _ in chunks]
    finished = torch.zeros(len(chunks), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        logits = model(tokens, cache, valid, last_only=True)[:, -1]
        next_tokens = logits.argmax(-1)
        for b, token in enumerate(next_tokens.tolist()):
            if not finished[b]:
                out[b].append(token)
                finished[b] = token in eos_ids
        if finished.all() or step == max_new_tokens - 1:
            break
        tokens, valid = next_tokens[:, None], ~finished[:, None]  # finished rows write invalid slots
    return out


def strip_eos(ids, eos_ids):
    return ids[:-1] if ids and ids[-1] in eos_ids else ids


def generate(model, prompts, max_new_tokens, eos_id=None):
    """Batched greedy generation with left padding and a KV cache: new tokens per prompt, without the EOS."""
    out = decode(model, model.new_cache(len(prompts)), prompts, max_new_tokens, eos_id)
    return [strip_eos(ids, eos_set(model, eos_id)) for ids in out]


class CachedDecoder:
    """Generation for agents whose prompts only grow: each key keeps its KV cache between calls, so
    a turn only pays for the tokens added since the last one. Keys absent from a call are dropped. A
    new key starts from a copy of the row that shares the longest prefix with its prompt (an agent's
    episodes share the system prompt: in SciWorld, 447 of SmolLM2's tokens of a first prompt of 620)."""

    def __init__(self, model):
        self.model = model
        self.cache = None
        self.keys, self.ids = [], []  # per cache row: its key and the token ids its slots hold

    def generate(self, keys, prompts, max_new_tokens, eos_id=None):
        """Greedy replies to `prompts`, one per key, without the EOS (as generate)."""
        self._arrange_rows(keys, prompts)
        keep = [min(common_prefix(held, prompt), len(prompt) - 1) for held, prompt in zip(self.ids, prompts)]
        self.cache.truncate_rows(keep)
        self.cache.pack()
        chunks = [prompt[n:] for prompt, n in zip(prompts, keep)]
        out = decode(self.model, self.cache, chunks, max_new_tokens, eos_id)
        self.ids = [prompt + ids[:-1] for prompt, ids in zip(prompts, out)]
        return [strip_eos(ids, eos_set(self.model, eos_id)) for ids in out]

    def _arrange_rows(self, keys, prompts):
        if self.cache is None:
            self.cache = self.model.new_cache(0)
        rows = [self.keys.index(k) if k in self.keys else self._donor(prompt) for k, prompt in zip(keys, prompts)]
        self.cache.select_rows(rows)
        self.ids = [self.ids[r] if r >= 0 else [] for r in rows]
        self.keys = list(keys)

    def _donor(self, prompt):
        """The row sharing the longest prefix with a new key's prompt (-1: none shares a token)."""
        shared = [common_prefix(ids, prompt) for ids in self.ids]
        return max(range(len(shared)), key=shared.__getitem__) if shared and max(shared) > 0 else -1


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ----------------------------------------------------------------------------- where the model runs

def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16(device):
    """Whether bf16 arithmetic runs at speed on this device: on CUDA, and on CPUs with AVX-512 (oneDNN's
    bf16 kernels). On an AVX2 CPU bf16 is emulated: SmolLM2-135M trained 29x slower under bf16 autocast
    than in fp32, and decoded 2.5x slower (bench.py rollout)."""
    if str(device).startswith("cuda"):
        return True
    return str(device) == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def physical_cores():
    """CPU cores this process may use, each physical core counted once: a core's second hardware
    thread does not speed up matrix multiplication, it makes the threads wait on each other. The
    processes torchrun starts on one machine (LOCAL_WORLD_SIZE) share its cores."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        blocks = []
    cores = set()
    for block in blocks:
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        if fields.get("processor", "").isdigit() and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id"), fields.get("core id", fields["processor"])))
    return max(1, (len(cores) or len(allowed)) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
