"""`rwkv-bot bench`: the bot as a user meets it, then the engine's raw figures, beside the plain `rwkv` package.

Random weights of a real shape (one preset per run: the package picks RWKV-6 or RWKV-7 at import).

1. The bot workload, first: through the real engine (scheduler, runner, the default sampler: Mirostat and
   penalties, streaming), N channels each send a 60-token message and get 128 tokens back. Messages arrive as a
   Poisson process spread over `ARRIVAL_SPREAD_S` (a burst, not one instant, so time to first token has a spread).
   Reported per N: generated tokens/s and total time (first arrival to last reply), time to first token p50/p95
   (from each channel's own arrival), and per-channel streaming tokens/s p5 (the slowest 5% of channels).
   `--capacity`: the largest N (doubling up to `CAPACITY_MAX`, as GPU memory allows) at which every channel still
   streams at >= 20 tokens/s (p5) and p95 first token <= 1 s.
2. Raw decode: single-stream and aggregate tokens/s per channel count (forward, greedy token on the device, one host
   transfer per step), the decode graph's GPU time alone, the sampler's time.
3. Prefill: one 2,000-token card in one call, the same in 256-token chunks, and 32 cards x 1,024 tokens in one
   batched call (`prefill_batched_tok_s`).
4. The package serving the same channels one after another, as the original web UI did (single-stream, aggregate
   up to `--baseline-max-channels`, prefill, the workload at one channel), and `greedy_agreement`: how often the
   engine's greedy token equals the package's, both fed the package's tokens (teacher forcing).

Prints a table (stdout) and writes JSON (`--json`, rewritten as results come in). Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PRESETS = {  # name: (version, layers, embedding)
    "tiny": (7, 2, 256),
    "0.1b": (7, 12, 768),
    "0.4b": (7, 24, 1024),
    "1.5b": (7, 24, 2048),
    "2.9b": (7, 32, 2560),
    "7.2b": (7, 32, 4096),
    "v6-tiny": (6, 2, 256),
    "v6-1.6b": (6, 24, 2048),
    "v6-3b": (6, 32, 2560),
}
VOCAB = 65536
CARD_TOKENS = 2000
MESSAGE_TOKENS = 60
REPLY_TOKENS = 128
ARRIVAL_SPREAD_S = 0.25  # messages of a workload arrive over about this long (Poisson)
BATCHED_CARDS, BATCHED_CARD_TOKENS = 32, 1024
CAPACITY_MAX = 4096  # the largest channel count the capacity search tries (config model.max_batch allows 4096)
CAPACITY_TOK_S = 20.0  # each channel streams at least this fast (p5) ...
CAPACITY_TTFT_S = 1.0  # ... and 95% see their first token within this
CAPACITY_CACHE_ROWS = 256  # a benchmark needs few cached states; the rest of the memory goes to active rows
BASELINE_WORKLOAD_CHANNELS = 1  # the package serves one channel at a time: 16 channels already take minutes


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def _quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))] if xs else float("nan")


def _p95(xs):
    return _quantile(xs, 0.95)


# --------------------------------------------------------------------------------------------------------------
# Measurements on any Backend


def measure_decode(backend, channels: int, seconds: float, max_steps: int, device, prompt_len: int = 16) -> dict:
    """Aggregate decode tokens/s with `channels` sequences in every step: forward, greedy token on the device, one
    host transfer per step (what a step of the engine must at least do)."""
    rng = random.Random(channels)
    slots = list(range(channels))
    for s in slots:
        backend.load(s, backend.zero_state())
    # Give every sequence some history (one packed prefill call where the backend packs).
    backend.forward([(s, [rng.randrange(1, 65000) for _ in range(prompt_len)]) for s in slots])
    last = [rng.randrange(1, 65000) for _ in slots]

    def step(tokens):
        logits = backend.forward([(s, [t]) for s, t in zip(slots, tokens)])
        return torch.argmax(logits, dim=-1).tolist()

    for _ in range(3):  # warm-up: graph capture, kernel compilation
        last = step(last)
    _sync(device)
    steps, t0 = 0, time.perf_counter()
    while steps < max_steps and (steps < 5 or time.perf_counter() - t0 < seconds):
        last = step(last)
        steps += 1
    elapsed = time.perf_counter() - t0
    for s in slots:
        backend.release(s)
    return {"tok_s": channels * steps / elapsed, "step_ms": 1000 * elapsed / steps, "steps": steps}


def measure_prefill(backend, device, tokens: int = CARD_TOKENS, repeats: int = 3, chunk: int | None = None) -> float:
    rng = random.Random(7)
    card = [rng.randrange(1, 65000) for _ in range(tokens)]
    times = []
    for rep in range(repeats + 1):  # the first run compiles and warms up
        backend.load(0, backend.zero_state())
        _sync(device)
        t0 = time.perf_counter()
        pieces = [card] if chunk is None else [card[i : i + chunk] for i in range(0, len(card), chunk)]
        for piece in pieces:
            logits = backend.forward([(0, piece)])
        float(logits[0, 0])  # forces completion
        _sync(device)
        if rep:
            times.append(time.perf_counter() - t0)
        backend.release(0)
    return tokens / _median(times)


def measure_prefill_batched(backend, device, cards: int = BATCHED_CARDS, tokens: int = BATCHED_CARD_TOKENS,
                            repeats: int = 2) -> float:
    """Tokens/s of `cards` cards of `tokens` tokens each, prefilled together in one batched call."""
    rng = random.Random(8)
    seqs = [[rng.randrange(1, 65000) for _ in range(tokens)] for _ in range(cards)]
    times = []
    for rep in range(repeats + 1):
        for s in range(cards):
            backend.load(s, backend.zero_state())
        _sync(device)
        t0 = time.perf_counter()
        logits = backend.forward([(s, seq) for s, seq in enumerate(seqs)])
        float(logits[0, 0])
        _sync(device)
        if rep:
            times.append(time.perf_counter() - t0)
        for s in range(cards):
            backend.release(s)
    return cards * tokens / _median(times)


class _NoTurnEndTokenizer:
    """The World tokenizer with newlines hidden from the scheduler, so every benchmark reply runs to its token cap
    (random weights would otherwise end replies at random)."""

    def __init__(self, inner):
        self._inner = inner

    def token_bytes(self, token_id: int) -> bytes:
        return self._inner.token_bytes(token_id).replace(b"\n", b" ")

    def __getattr__(self, name):
        return getattr(self._inner, name)


async def measure_workload(engine, channels: int, spread: float = ARRIVAL_SPREAD_S) -> dict:
    """`channels` channels send a 60-token message each, arriving as a Poisson process over about `spread`
    seconds, and get 128 tokens back with the default sampling, through the engine (asyncio, as the bot)."""
    from bot.engine.sampling import SamplingParams

    rng = random.Random(100 + channels)
    params = SamplingParams(max_tokens=REPLY_TOKENS)  # the bot's default sampling (Mirostat, penalties)
    prompts = [[rng.randrange(1, 65000) for _ in range(MESSAGE_TOKENS)] for _ in range(channels)]
    gaps = [rng.expovariate(channels / spread) for _ in range(channels)] if channels > 1 else [0.0]
    arrivals = [sum(gaps[: i + 1]) - gaps[0] for i in range(channels)]

    zero = engine.backend.zero_state()
    t0 = time.monotonic()
    ttft, rate, lengths, done_at = [], [], [], []

    async def channel(i):
        await asyncio.sleep(max(0.0, t0 + arrivals[i] - time.monotonic()))
        arrived = time.monotonic()
        gen = engine.generate(zero, prompts[i], params, channel=f"bench{i}", seed=i)
        result = await gen.result()
        done_at.append(time.monotonic())
        ttft.append(gen.first_token_at - arrived)
        n = len(result.generated)
        lengths.append(n)
        if n > 1:
            rate.append((n - 1) / max(1e-9, gen.last_token_at - gen.first_token_at))
        del result  # its state goes back to the pool of host buffers

    await asyncio.gather(*(channel(i) for i in range(channels)))
    total = max(done_at) - t0
    return {"ttft_p50_s": _median(ttft), "ttft_p95_s": _p95(ttft), "total_s": total, "tokens": sum(lengths),
            "tok_s": sum(lengths) / total, "per_channel_tok_s_p5": _quantile(rate, 0.05) if rate else None,
            "arrival_spread_s": arrivals[-1]}



def make_engine(backend, max_batch: int):
    """One engine for every workload of the run: its graphs are captured once. Its tokenizer hides newlines
    (random weights would otherwise end replies at random), so every reply runs to its token cap."""
    from bot.engine.engine import Engine
    from bot.engine.tokenizer import world_tokenizer

    return Engine(backend, _NoTurnEndTokenizer(world_tokenizer()), max_batch=max_batch, seed=0)


async def warm_engine(engine, channels: int) -> None:
    """A running bot's engine is warm (kernels compiled, graphs captured for the batch sizes it meets): warm it for
    up to `channels` rows, then one short reply, all untimed."""
    from bot.engine.sampling import SamplingParams

    await engine.warmup(channels)
    await engine.generate(engine.backend.zero_state(), [1, 2, 3], SamplingParams(max_tokens=2), seed=0).result()


async def capacity(engine, start: int, limit: int, log=None) -> dict:
    """The largest channel count (doubling from `start` up to `limit`) at which p5 streaming >= CAPACITY_TOK_S and
    p95 first token <= CAPACITY_TTFT_S."""
    trials, best, n = [], None, start
    while n <= limit:
        if log:
            log(f"capacity: {n} channels")
        await warm_engine(engine, n)
        w = await measure_workload(engine, n)
        ok = (w["per_channel_tok_s_p5"] or 0) >= CAPACITY_TOK_S and w["ttft_p95_s"] <= CAPACITY_TTFT_S
        trials.append(dict(w, channels=n, ok=ok))
        if not ok:
            break
        best, n = n, n * 2
    return {"channels": best, "per_channel_tok_s_min": CAPACITY_TOK_S, "ttft_p95_max_s": CAPACITY_TTFT_S,
            "limit": limit, "trials": trials}


def measure_graph_step(backend, batch: int, repeats: int = 50) -> float | None:
    """Milliseconds of one decode step's CUDA graph replay alone (no host work), by CUDA events."""
    if not getattr(backend, "use_graphs", False):
        return None
    for s in range(batch):
        backend.load(s, backend.zero_state())
    rows = [(s, [s + 1]) for s in range(batch)]
    backend.forward(rows)  # captures the bucket's graph if needed
    graph = backend._graphs[next(b for b in sorted(backend._graphs) if b >= batch)]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.graph.replay()
    start.record()
    for _ in range(repeats):
        graph.graph.replay()
    end.record()
    end.synchronize()
    for s in range(batch):
        backend.release(s)
    return start.elapsed_time(end) / repeats


def measure_sampler(backend, batch: int, repeats: int = 20) -> float | None:
    """Milliseconds per DeviceSampler.sample call (eager; in the engine it runs inside the step's graph) with the
    bot's default sampling (Mirostat, penalties) over `batch` rows whose replies are 64 tokens in."""
    from bot.engine.sampling import DeviceSampler, SamplingParams, TokenTable
    from bot.engine.tokenizer import world_tokenizer

    if not hasattr(backend, "slab"):
        return None
    from bot.engine.runner import draw_kernel_for

    dev, V = backend.device, backend.info.vocab_size
    sampler = DeviceSampler(batch, V, dev, TokenTable(world_tokenizer(), V, dev),
                            draw_kernel=draw_kernel_for(backend))
    sampler.begin(list(range(batch)), [SamplingParams(max_tokens=2000)] * batch, list(range(batch)), [-1] * batch)
    rng = random.Random(batch)
    for _ in range(64):
        sampler.observe(list(range(batch)), [rng.randrange(1, 65000) for _ in range(batch)], reply_bytes=False)
    gen = torch.Generator(device=dev).manual_seed(batch)
    logits = torch.randn(batch, V, device=dev, generator=gen) * 3
    slots, active = torch.arange(batch, device=dev), torch.ones(batch, dtype=torch.bool, device=dev)
    sampler.sample(logits, slots, active)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        sampler.sample(logits, slots, active)
    _sync(dev)
    return 1000 * (time.perf_counter() - t0) / repeats


def greedy_agreement(engine, baseline, sequences: int, length: int, device) -> dict:
    """Teacher-forced: both fed the package's greedy tokens; counts positions where the argmaxes agree."""
    rng = random.Random(11)
    agree = total = 0
    first_diff = []
    for n in range(sequences):
        prompt = [rng.randrange(1, 65000) for _ in range(32)]
        baseline.load(0, baseline.zero_state())
        engine.load(0, engine.zero_state())
        lb = baseline.forward([(0, prompt)])[0]
        le = engine.forward([(0, prompt)])[0]
        diverged = None
        for pos in range(length):
            tb, te = int(torch.argmax(lb)), int(torch.argmax(le))
            agree += tb == te
            total += 1
            if tb != te and diverged is None:
                diverged = pos
            lb = baseline.forward([(0, [tb])])[0]
            le = engine.forward([(0, [tb])])[0]
        first_diff.append(diverged if diverged is not None else length)
        baseline.release(0)
        engine.release(0)
    return {"rate": agree / total, "positions": total, "first_difference": first_diff}


# --------------------------------------------------------------------------------------------------------------
# Profiling


def profile_engine(backend, device, out_dir: Path, batches=(1, 64)) -> dict:
    """Kernel time by operator for eager decode steps (no graph, so each kernel shows) and a 512-token prefill."""
    from torch.profiler import ProfilerActivity, profile

    from bot.engine import rwkv7

    summary = {}
    z, model = backend.z, backend.model
    for B in batches:
        tokens = torch.randint(1, 65000, (B,), device=device)
        rows = torch.arange(B, device=device) % backend.max_batch
        for _ in range(2):
            model.decode_step(z, tokens, rows, backend.pools, backend.ops)
        _sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                model.decode_step(z, tokens, rows, backend.pools, backend.ops)
            _sync(device)
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
        (out_dir / f"profile_decode_b{B}.txt").write_text(table)
        summary[f"decode_b{B}"] = _top_kernels(prof, 5)
    packed = rwkv7.Packed.build([list(range(1, 513))], [0], device)
    model.forward_packed(z, packed, backend.pools, backend.ops)
    _sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        model.forward_packed(z, packed, backend.pools, backend.ops)
        _sync(device)
    (out_dir / "profile_prefill512.txt").write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    summary["prefill_512"] = _top_kernels(prof, 1)
    return summary


def _top_kernels(prof, steps: int) -> list:
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t and e.key and not e.key.startswith(("aten::", "cuda", "Memcpy")) or (t and e.key.startswith("Memcpy")):
            rows.append((e.key[:70], t / steps / 1000.0, e.count // steps))
    rows.sort(key=lambda r: -r[1])
    return [{"kernel": k, "ms_per_step": round(ms, 4), "launches_per_step": n} for k, ms, n in rows[:12]]


# --------------------------------------------------------------------------------------------------------------
# The command


def _make_weights(version: int, layers: int, dim: int, dtype, device) -> dict:
    from bot.tools.demo_model import rwkv6_weights, rwkv7_weights

    make = rwkv7_weights if version == 7 else rwkv6_weights
    return make(layers, dim, vocab=VOCAB, seed=1234, dtype=dtype, device=device)


def _raw(name, backend, device, channels, args, max_channels=None) -> dict:
    """Raw decode and prefill figures of one backend."""
    res: dict = {"single_decode_tok_s": None, "aggregate_decode_tok_s": {}, "decode_step_ms": {},
                 "prefill_tok_s": None}
    _log(f"{name}: single-stream decode")
    d = measure_decode(backend, 1, args.seconds, args.max_steps, device)
    res["single_decode_tok_s"] = d["tok_s"]
    for n in channels:
        if max_channels and n > max_channels:
            continue
        _log(f"{name}: aggregate decode at {n} channels")
        d = d if n == 1 else measure_decode(backend, n, args.seconds, args.max_steps, device)
        res["aggregate_decode_tok_s"][str(n)] = d["tok_s"]
        res["decode_step_ms"][str(n)] = d["step_ms"]
    _log(f"{name}: prefill of a {args.card_tokens}-token card")
    res["prefill_tok_s"] = measure_prefill(backend, device, args.card_tokens, repeats=args.prefill_repeats)
    return res


async def _bot(engine, channels, args, cap_limit) -> dict:
    """The bot workload per channel count, then the capacity search."""
    res: dict = {"workload": {}}
    await engine.start()
    for n in channels:
        _log(f"bot workload at {n} channels")
        await warm_engine(engine, n)
        res["workload"][str(n)] = await measure_workload(engine, n)
        _log(f"  {res['workload'][str(n)]}")
    if args.capacity:
        res["capacity"] = await capacity(engine, max(channels) * 2, cap_limit, _log)
    await engine.close()
    return res


def _capacity_limit(version, layers, dim, device, weight_bytes: int) -> int:
    """The most channels whose states fit in the GPU memory left (doubling counts up to CAPACITY_MAX)."""
    if torch.device(device).type != "cuda":
        return 0
    H = dim // 64
    state = layers * (2 * dim * 2 + H * 64 * 64 * 4)
    free = torch.cuda.mem_get_info()[1] - weight_bytes - (16 << 30)  # graphs, logits and activations
    n = CAPACITY_MAX
    while n > 1 and (n + CAPACITY_CACHE_ROWS) * state + n * VOCAB * 16 > free:
        n //= 2
    return n


def bench_command(args: argparse.Namespace) -> int:
    preset = args.preset.lower()
    if preset not in PRESETS:
        print(f"rwkv-bot bench: unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("rwkv-bot bench: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    try:
        channels = sorted({int(c) for c in str(args.channels).split(",") if c.strip()})
    except ValueError:
        print("rwkv-bot bench: --channels takes comma-separated integers", file=sys.stderr)
        return 2
    if not channels or min(channels) < 1:
        print("rwkv-bot bench: --channels needs positive counts", file=sys.stderr)
        return 2
    from bot.engine.batched import DTYPES, BatchedBackend

    precision = args.precision or ("fp16" if device == "cuda" else "fp32")
    strategy = f"{device} {precision}"
    version, layers, dim = PRESETS[preset]
    torch.manual_seed(0)

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))

    result: dict = {"preset": preset, "version": version, "layers": layers, "n_embd": dim, "strategy": strategy,
                    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "torch": torch.__version__, "channels": channels, "card_tokens": args.card_tokens,
                    "message_tokens": MESSAGE_TOKENS, "reply_tokens": REPLY_TOKENS,
                    "arrival_spread_s": ARRIVAL_SPREAD_S, "baseline_rwkv_pip": None, "greedy_agreement": None}
    _log(f"preset {preset}: RWKV-{version} {layers}x{dim}, {strategy}; generating random weights")
    raw = _make_weights(version, layers, dim, DTYPES[precision.removesuffix("i8")], device)
    weight_bytes = sum(t.numel() * t.element_size() for t in raw.values())
    cap_limit = _capacity_limit(version, layers, dim, device, weight_bytes) if args.capacity else 0
    max_batch = max(channels + [cap_limit, BATCHED_CARDS])
    backend = BatchedBackend(f"random-{preset}", strategy, max_batch=max_batch, weights=raw,
                             cache_rows=min(CAPACITY_CACHE_ROWS, max_batch))
    # The engine holds its own copy: keep the checkpoint tensors only for the package, and off the GPU.
    raw = None if args.no_baseline else {k: v.cpu() for k, v in raw.items()}
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    _log(f"engine ready: kernels={backend.ops.name}, cuda graphs={backend.use_graphs}, rows for {max_batch} "
         f"channels, {backend.slab.state_bytes / 2**20:.1f} MiB per channel state")
    result["engine"] = {"kernels": backend.ops.name, "state_mib_per_channel": backend.slab.state_bytes / 2**20}
    if not args.no_workload:
        result["engine"].update(asyncio.run(_bot(make_engine(backend, max_batch), channels, args, cap_limit)))
        save()
    result["engine"].update(_raw("engine", backend, device, channels, args))
    if device == "cuda":
        result["engine"]["graph_step_ms"] = {str(n): measure_graph_step(backend, n) for n in channels}
    result["engine"]["sample_ms"] = {str(n): measure_sampler(backend, n) for n in channels}
    result["engine"]["prefill_chunked_256_tok_s"] = measure_prefill(backend, device, args.card_tokens, repeats=1,
                                                                    chunk=256)
    _log(f"engine: prefill of {BATCHED_CARDS} cards x {BATCHED_CARD_TOKENS} tokens in one call")
    result["engine"]["prefill_batched_tok_s"] = measure_prefill_batched(backend, device)
    if device == "cuda":
        result["engine"]["gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    save()  # a run cut short (a time limit) keeps what it measured
    if args.profile:
        _log("profiling")
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        result["profile"] = profile_engine(backend, device, Path(args.profile), batches=(1, min(256, max_batch)))
    if not args.no_baseline:
        from bot.engine.rwkv_pip import RwkvPipBackend

        with tempfile.TemporaryDirectory(prefix="rwkv-bench-") as tmp:
            path = Path(tmp) / f"random-{preset}.pth"
            _log(f"writing the checkpoint for the package ({path})")
            torch.save(raw, path)
            raw = None
            gc.collect()
            baseline = RwkvPipBackend(path, strategy)
            _log("baseline ready")
            base = _raw("rwkv-pip", baseline, device, channels, args, max_channels=args.baseline_max_channels)
            result["baseline_rwkv_pip"] = base
            save()
            base["workload"] = asyncio.run(_package_workload(baseline))
            save()
            _log("greedy agreement")
            agreement = greedy_agreement(backend, baseline, args.agreement_sequences, args.agreement_tokens, device)
            result["greedy_agreement"] = agreement["rate"]
            result["greedy_agreement_detail"] = agreement
    save()
    print(format_table(result))
    return 0


async def _package_workload(baseline) -> dict:
    engine = make_engine(baseline, BASELINE_WORKLOAD_CHANNELS)
    await engine.start()
    await warm_engine(engine, 1)
    out = {str(BASELINE_WORKLOAD_CHANNELS): await measure_workload(engine, BASELINE_WORKLOAD_CHANNELS)}
    await engine.close()
    return out


def format_table(result: dict) -> str:
    eng, base = result["engine"], result.get("baseline_rwkv_pip") or {}
    fmt = lambda v: "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
    lines = [f"RWKV-{result['version']} {result['preset']} ({result['layers']}x{result['n_embd']}), "
             f"{result['strategy']}, {result['device']}", ""]
    workload = eng.get("workload") or {}
    if workload:
        raw = eng.get("aggregate_decode_tok_s") or {}
        lines += [f"bot workload: {MESSAGE_TOKENS}-token message in, {REPLY_TOKENS} tokens back per channel, "
                  f"arrivals over {ARRIVAL_SPREAD_S} s, default sampling",
                  f"{'channels':<10}{'tok/s':>10}{'of raw':>8}{'total s':>9}{'TTFT p50':>10}{'p95':>8}"
                  f"{'per-channel p5':>16}"]
        for n in sorted(workload, key=int):
            w = workload[n]
            ratio = f"{100 * w['tok_s'] / raw[n]:.0f}%" if raw.get(n) else "-"
            lines.append(f"{n:<10}{fmt(w['tok_s']):>10}{ratio:>8}{w['total_s']:>9.2f}{w['ttft_p50_s']:>10.3f}"
                         f"{w['ttft_p95_s']:>8.3f}{fmt(w['per_channel_tok_s_p5']):>16}")
        for n, b in (base.get("workload") or {}).items():
            lines.append(f"{'rwkv ' + n:<10}{fmt(b['tok_s']):>10}{'':>8}{b['total_s']:>9.2f}{b['ttft_p50_s']:>10.3f}"
                         f"{b['ttft_p95_s']:>8.3f}{fmt(b['per_channel_tok_s_p5']):>16}")
        cap = eng.get("capacity")
        if cap:
            lines.append(f"capacity: {cap['channels']} channels (p5 >= {CAPACITY_TOK_S:.0f} tok/s, p95 first token "
                         f"<= {CAPACITY_TTFT_S:.0f} s; tried up to {cap['limit']}); "
                         f"{eng['state_mib_per_channel']:.1f} MiB of GPU memory per active channel")
        lines.append("")
    lines.append(f"{'tokens/s':<34}{'engine':>14}{'rwkv package':>16}")
    lines.append(f"{'single-stream decode':<34}{fmt(eng.get('single_decode_tok_s')):>14}"
                 f"{fmt(base.get('single_decode_tok_s')):>16}")
    for n in result["channels"]:
        lines.append(f"{f'aggregate decode, {n} channels':<34}"
                     f"{fmt((eng.get('aggregate_decode_tok_s') or {}).get(str(n))):>14}"
                     f"{fmt((base.get('aggregate_decode_tok_s') or {}).get(str(n))):>16}")
    card = f"prefill, {result['card_tokens']}-token card"
    lines.append(f"{card:<34}{fmt(eng.get('prefill_tok_s')):>14}{fmt(base.get('prefill_tok_s')):>16}")
    lines.append(f"{f'prefill, {BATCHED_CARDS} x {BATCHED_CARD_TOKENS} at once':<34}"
                 f"{fmt(eng.get('prefill_batched_tok_s')):>14}{'-':>16}")
    if result.get("greedy_agreement") is not None:
        d = result["greedy_agreement_detail"]
        lines += ["", f"greedy agreement with the package: {100 * result['greedy_agreement']:.1f}% of "
                      f"{d['positions']} teacher-forced positions (first difference at {d['first_difference']})"]
    return "\n".join(lines)
