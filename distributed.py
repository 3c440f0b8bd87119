"""Past one GPU: what a launch with torchrun (one process a GPU, each a "rank") changes in training
and rollouts.

    torchrun --nproc-per-node 8 step.py train ...  # FSDP2: each rank holds 1/8 of the weights, gradients, AdamW
    torchrun --nproc-per-node 8 step.py eval ...   # each rank plays every 8th task with its own copy of the agent

train.py and rollout.py call these functions at a few marked places. In one process (no torchrun)
each is what one process does (this process is rank 0 of 1, a share is everything, a barrier waits
for nobody), so the single-process loop reads as it would without them. run_on_ranks is how the
pipeline starts a stage on N processes (torchrun's launcher, as a function).
"""
import atexit
import gc
import logging
import math
import os
import uuid
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.distributed.tensor import DTensor, distribute_tensor

from data import StepError
from model import ModelArgs, Transformer, load_model, model_from_state

# How long a collective waits for the slowest rank: in training, rank 0 writing a 7B's checkpoint
# (minutes) while the others wait; in rollouts, the ranks that finished their tasks first.
TRAIN_TIMEOUT = timedelta(hours=1)
ROLLOUT_TIMEOUT = timedelta(hours=24)


def launched():
    """Whether torchrun started this process (it sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR...)."""
    return "WORLD_SIZE" in os.environ


def start(device, backend, timeout):
    """Under torchrun: join the ranks' process group (once a process) and return this rank's device,
    cuda:LOCAL_RANK for "cuda"; in one process, `device` as it is."""
    if not launched():
        return device
    if str(device).startswith("cuda"):
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise StepError(f"local rank {local_rank}: this machine shows {torch.cuda.device_count()} GPU(s); start "
                            "at most one process a GPU (torchrun --nproc-per-node, pipeline --nproc)")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
        atexit.register(leave)
    return device


def leave():
    """At exit: the garbage that still holds the process group (a sharded model's reference cycles)
    collected first, then the group destroyed. Left to the interpreter's shutdown, the group's last
    reference could go in an order that aborts the process (a worker thread destroyed unjoined): a rank
    that did its work would fail its launch, and the others would be stopped, rank 0 maybe mid-write."""
    gc.collect()
    dist.destroy_process_group()


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    """Whether this process writes the shared files: rank 0, or the only process."""
    return rank() == 0


def share(items, pad=None):
    """This rank's items: numbers r, r + N, r + 2N... of N ranks. With `pad`, filled up with it to as
    many as the rank with the most gets, so that every rank makes the same collective calls."""
    mine = items[rank()::world_size()]
    if pad is not None:
        mine += [pad] * (math.ceil(len(items) / world_size()) - len(mine))
    return mine


def all_sum(tensor):
    """The sum of `tensor` over the ranks (a collective: every rank calls it)."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def all_gather(obj):
    """Every rank's `obj`, in rank order (a collective)."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier():
    if dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- the sharded model (FSDP2)

def shard(model, compute_dtype=None):
    """Shard `model` over the ranks with FSDP2, in place: one unit a transformer block, then the root
    (embeddings, final norm, output layer). compute_dtype: the dtype the weights are gathered in for
    forward and backward (bf16 under --dtype bf16; None: their own); the gradients are reduced in the
    weights' own dtype."""
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=next(model.parameters()).dtype)
    for block in model.layers:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    for unit in model.modules():
        if isinstance(unit, FSDPModule):
            # Sum the ranks' gradients rather than average them: each rank's loss is already divided by
            # the trainable tokens of the whole window on all ranks. A plain SUM (gloo has no PREMUL_SUM).
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)
    return model


def load_sharded_model(path, device, dtype, compute_dtype=None):
    """The checkpoint at `path` in `dtype`, sharded over the ranks (shard). It is built empty on every
    rank and rank 0 alone reads the checkpoint, whose weights go out from it: one copy in CPU memory,
    not one a rank."""
    with torch.device("meta"):
        model = Transformer(ModelArgs.from_hf_dir(path)).to(dtype)
    shard(model, compute_dtype).to_empty(device=device)
    full = load_model(path, "cpu", dtype).state_dict() if is_main() else {}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def full_model(model):
    """The model whole, to save: `model` itself in one process; under torchrun a plain Transformer on
    the CPU with the gathered weights on rank 0, None on the others (a collective)."""
    if not dist.is_initialized():
        return model
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main():
        return None
    names = {name for name, _ in model.named_parameters()}  # a tied output layer is listed once
    return model_from_state(model.args, {n: t for n, t in state.items() if n in names}, "gathered weights")


def full_optimizer_state(optimizer):
    """optimizer.state_dict() with every sharded tensor gathered whole, so that a checkpoint loads onto
    any number of ranks: on rank 0 (None on the others) under torchrun (a collective)."""
    state = optimizer.state_dict()
    if not dist.is_initialized():
        return state
    whole = {}
    for index, values in state["state"].items():  # the same order on every rank
        whole[index] = dict(values)
        for name, value in values.items():
            if isinstance(value, DTensor):
                full = value.full_tensor()  # a collective: on every rank; kept (in CPU memory) on rank 0 alone
                whole[index][name] = full.cpu() if is_main() else None
    return {**state, "state": whole} if is_main() else None


def load_optimizer_state(optimizer, state):
    """optimizer.load_state_dict of a saved full_optimizer_state: under torchrun each rank keeps its
    shard of every tensor the size of its parameter."""
    if dist.is_initialized():
        params = [p for group in optimizer.param_groups for p in group["params"]]  # state_dict's numbering
        for index, values in state["state"].items():
            p = params[index]
            for name, value in values.items():
                if isinstance(p, DTensor) and isinstance(value, torch.Tensor) and value.shape == p.shape:
                    # each rank cuts its own shard, a copy: no view keeps the whole tensor alive
                    values[name] = distribute_tensor(value, p.device_mesh, p.placements, src_data_rank=None).clone()
    optimizer.load_state_dict(state)


# ----------------------------------------------------------------------------- launching

def run_on_ranks(nproc, fn, *args, **kwargs):
    """fn(*args, **kwargs) on `nproc` processes started as `torchrun --standalone --nproc-per-node nproc` starts
    them (one a GPU; fn's return values are not kept). A failed rank stops the others and raises
    StepError with its error."""
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn")
    levels = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
              if isinstance(logger, logging.Logger) and logger.level}  # e.g. step.py's quieted py4j
    try:
        elastic_launch(config, rank_main)(fn, args, kwargs, levels)
    except ChildFailedError as e:
        failed_rank, failure = e.get_first_failure()
        message = failure.message  # {"message": ..., "extraInfo": {traceback}} from record, or "Signal 9 ..."
        raise StepError(f"{fn.__name__} on {nproc} ranks: rank {failed_rank} failed: "
                        f"{message['message'] if isinstance(message, dict) else message}") from None


def rank_main(fn, args, kwargs, levels):
    """A rank started by run_on_ranks: it logs as the launching process does (the loggers' `levels`),
    its lines naming it; fn's return value stays here."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {os.environ['RANK']} %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    record(fn)(*args, **kwargs)
