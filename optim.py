"""The lean memory mode of training: AdamW with bf16 moments and stochastic rounding, so that a
full fine-tune of a 7B model at 4096 tokens fits on one 80 GB GPU, and the memory estimate that
says what each mode needs, on one GPU or sharded over several."""
import torch
from torch.distributed.tensor import DTensor

from model import ModelArgs


def estimate_memory(args: ModelArgs, seq_len, memory_mode, grad_ckpt=True, ranks=1):
    """What a full fine-tune needs on each GPU, in GB (1e9 bytes), with micro-batches of `seq_len`
    tokens, on one GPU or sharded with FSDP2 over `ranks` GPUs.

    Per parameter: standard = fp32 weights 4 B + fp32 gradients 4 B + AdamW's two fp32 moments 8 B
    = 16 B, plus the bf16 copies autocast makes of the weights (2 B); lean = bf16 weights 2 B +
    bf16 gradients 2 B + two bf16 moments 4 B = 8 B. LLaMA-2-7B has 6.74e9 parameters: standard
    108 GB (+13 GB) does not fit on an 80 GB GPU, lean 54 GB does.
    Activations, with per-block checkpointing: the input of every block is kept ([seq_len, dim];
    fp32 in standard mode, where the residual stream stays fp32 under autocast; bf16 in lean):
    32 layers x 4096 tokens x 4096 x 2 B = 1.1 GB for the 7B at 4096 tokens; backward recomputes
    one block at a time, about 10 dim + 4 hidden bf16 values a token (norms, q, k, v, attention
    output, gate, up and their product): 0.7 GB; the logits in bf16, their fp32 copy for the
    loss and its gradient: 4096 x 32000 x (2 + 4 + 4) B = 1.3 GB. Lean's optimizer step works in
    fp32 on one tensor at a time (about six temporaries the size of the largest, the embedding:
    3.1 GB). Lean total for the 7B at 4096 tokens: about 60 GB. Without checkpointing every block's
    activations stay: 32 x 0.7 = 22 GB more.
    Sharded over N ranks (ranks > 1): each rank holds 1/N of the weights, gradients and optimizer
    state (and its optimizer step's temporaries are 1/N too). Instead of autocast's copies, FSDP2
    gathers the weights in bf16 a unit at a time: the root (embeddings, output layer), which stays
    gathered through the step, and two blocks (the one computing and the next), each with its whole
    gradient until it is reduce-scattered (fp32 in standard, bf16 in lean). The residual stream is
    bf16 in both modes. Activations are those of one micro-batch, as on one GPU."""
    a = args
    attention = a.dim * a.head_dim * (2 * a.n_heads + 2 * a.n_kv_heads)
    block = attention + 3 * a.dim * a.hidden_dim + 2 * a.dim
    root = a.vocab_size * a.dim * (1 if a.tie_embeddings else 2) + a.dim
    params = a.n_layers * block + root
    lean, sharded = memory_mode == "lean", ranks > 1
    per_param = {"weights": 2 if lean else 4, "gradients": 2 if lean else 4, "optimizer": 4 if lean else 8,
                 "autocast_weight_copies": 0 if lean or sharded else 2}
    one_block = seq_len * (10 * a.dim + 4 * a.hidden_dim) * 2
    largest = a.vocab_size * a.dim if a.vocab_size > a.hidden_dim else a.dim * a.hidden_dim
    gb = {name: params * size / ranks / 1e9 for name, size in per_param.items()}
    gb.update({
        "gathered_units": (root + 2 * block) * (2 + (2 if lean else 4)) / 1e9 if sharded else 0.0,
        "block_inputs": a.n_layers * seq_len * a.dim * (2 if lean or sharded else 4) / 1e9,
        "block_activations": (1 if grad_ckpt else a.n_layers) * one_block / 1e9,
        "logits": seq_len * a.vocab_size * (2 + 4 + 4) / 1e9,
        "optimizer_step_temporaries": 6 * largest * 4 / ranks / 1e9 if lean else 0.0,
    })
    return {"params": params, "bytes_per_param": sum(per_param.values()), **gb, "total": sum(gb.values())}


def round_to_bf16(x):
    """Stochastic rounding of an fp32 tensor to bf16: round up with a probability equal to the
    distance from the bf16 value below (in units of the gap), so E[round(x)] = x. bf16 is the top
    16 bits of fp32: add uniform noise to the 16 bits that are cut off, then cut them."""
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint_like(bits, 0, 1 << 16)
    return (bits + noise).bitwise_and_(-65536).view(torch.float32).to(torch.bfloat16)


class LeanAdamW(torch.optim.Optimizer):
    """AdamW with bf16 moments for bf16 weights: 8 bytes a parameter with bf16 gradients, not 16.
    Sharded by FSDP (under torchrun), each rank updates its shard with its own rounding noise.

    The update is computed in fp32, one tensor at a time. The new moments and weights are stored
    with stochastic rounding: round-to-nearest would drop every update below half a bf16 ulp (a
    weight of 1.0 ignores a change of 0.001, a typical lr x update), and the second moment would
    never decay (0.999 v rounds back to v). fp32 weights are updated exactly (no rounding)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.bfloat16)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.bfloat16)
                state["step"] += 1
                t = state["step"]
                # A sharded (FSDP) parameter's state is sharded like it: each rank updates its own shard.
                param, grad, m, v = (local(x) for x in (p, p.grad, state["exp_avg"], state["exp_avg_sq"]))
                grad = grad.float()
                exp_avg = m.float().lerp_(grad, 1 - beta1)
                exp_avg_sq = v.float().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m.copy_(round_to_bf16(exp_avg))
                v.copy_(round_to_bf16(exp_avg_sq))
                denom = exp_avg_sq.div_(1 - beta2 ** t).sqrt_().add_(eps)
                weight = param.float().mul_(1 - lr * decay)  # for an fp32 p this is p itself, updated in place
                weight.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** t))
                param.copy_(round_to_bf16(weight) if p.dtype == torch.bfloat16 else weight)


def local(tensor):
    """A DTensor's shard on this rank; a plain tensor as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor

