"""`rwkv-bot bench`: the batched engine against the plain `rwkv` package, on random weights of a real shape.

One preset per run (the package picks RWKV-6 or RWKV-7 at import, so a run serves one version). Measures, for the
engine and for the package serving the same channels one after another (as the original web UI did):

* single-stream decode tokens/s, and aggregate decode tokens/s per channel count (the package only up to 16
  channels: it serves one at a time, so its aggregate is measured, never extrapolated);
* prefill tokens/s of a 2,000-token card;
* the bot workload through the real scheduler (`bot.engine.scheduler.Engine`): N channels each send a 60-token
  message at once and get 128 tokens back (time to first token p50/p95, time until every reply is done);
* `greedy_agreement`: how often the engine's greedy token equals the package's over long generations, the
  engine fed the package's tokens (teacher forcing), so one early difference does not decide the rest.

Decode loops run as the scheduler does: forward, then sample (greedy here) with one host transfer per step.
Prints a table (stdout) and writes JSON (`--json`). Progress goes to stderr.
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


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def _p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(0.95 * len(xs)) - 1))] if xs else float("nan")


# --------------------------------------------------------------------------------------------------------------
# Measurements on any Backend


def measure_decode(backend, channels: int, seconds: float, max_steps: int, device, prompt_len: int = 16) -> dict:
    """Aggregate decode tokens/s with `channels` sequences in every step (forward + greedy sampling)."""
    from bot.engine.sampling import ReplySampler, SamplingParams

    rng = random.Random(channels)
    slots = list(range(channels))
    for s in slots:
        backend.load(s, backend.zero_state())
    # Give every sequence some history (one packed prefill call where the backend packs).
    backend.forward([(s, [rng.randrange(1, 65000) for _ in range(prompt_len)]) for s in slots])
    samplers = [ReplySampler(SamplingParams(temperature=0.0)) for _ in slots]
    banned = [{0} for _ in slots]
    texts = [""] * channels
    sample = getattr(backend, "sample", None)
    last = [rng.randrange(1, 65000) for _ in slots]

    def step(tokens):
        logits = backend.forward([(s, [t]) for s, t in zip(slots, tokens)])
        if sample is not None:
            return sample(logits, samplers, banned, texts)
        logits = logits.float().cpu()
        return [sm.sample(logits[k], banned[k], "") for k, sm in enumerate(samplers)]

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


class _NoTurnEndTokenizer:
    """The World tokenizer with newlines hidden from the scheduler, so every benchmark reply runs to its token cap
    (random weights would otherwise end replies at random)."""

    def __init__(self, inner):
        self._inner = inner

    def token_bytes(self, token_id: int) -> bytes:
        return self._inner.token_bytes(token_id).replace(b"\n", b" ")

    def __getattr__(self, name):
        return getattr(self._inner, name)


def measure_workload(backend, channels: int, device, chunk_len: int = 256) -> dict:
    """N channels each send a 60-token message at once and get 128 tokens back, through the real scheduler."""
    from bot.engine.sampling import SamplingParams
    from bot.engine.engine import Engine
    from bot.engine.tokenizer import world_tokenizer

    rng = random.Random(100 + channels)
    params = SamplingParams(max_tokens=REPLY_TOKENS)  # the bot's default sampling (Mirostat, penalties)
    tokenizer = _NoTurnEndTokenizer(world_tokenizer())

    async def run() -> dict:
        engine = Engine(backend, tokenizer, chunk_len=chunk_len, max_batch=channels, seed=channels)
        await engine.start()
        try:
            zero = backend.zero_state()
            # A running bot's engine thread is warm (per-thread GPU library handles, lazily loaded kernels):
            # one short reply first, untimed.
            await engine.generate(zero, [1, 2, 3], SamplingParams(max_tokens=2), seed=0).result()
            prompts = [[rng.randrange(1, 65000) for _ in range(MESSAGE_TOKENS)] for _ in range(channels)]
            t0 = time.monotonic()
            gens = [engine.generate(zero, p, params, channel=f"bench{i}", seed=i) for i, p in enumerate(prompts)]
            firsts = [None] * channels

            async def watch(i, gen):
                async for _ in gen:  # the first (non-empty) text
                    break
                firsts[i] = time.monotonic() - t0
                await gen.result()

            await asyncio.gather(*(watch(i, g) for i, g in enumerate(gens)))
            total = time.monotonic() - t0
            ttft = []
            for i, g in enumerate(gens):
                job = getattr(g, "_job", None)  # the scheduler's record of the first sampled token, when present
                at = getattr(job, "first_token_at", None)
                ttft.append(at - t0 if at is not None else firsts[i])
            lengths = [len((await g.result()).generated) for g in gens]
        finally:
            await engine.close()
        return {"ttft_p50_s": _median(ttft), "ttft_p95_s": _p95(ttft), "total_s": total,
                "tokens": sum(lengths), "tok_s": sum(lengths) / total}

    return asyncio.run(run())


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
    """Milliseconds per BatchedBackend.sample call with the bot's default sampling (Mirostat, penalties) over
    `batch` rows whose replies are 64 tokens in."""
    from bot.engine.sampling import ReplySampler, SamplingParams

    sample = getattr(backend, "sample", None)
    if sample is None:
        return None
    dev = backend.device
    gen = torch.Generator(device=dev).manual_seed(batch)
    logits = torch.randn(batch, backend.info.vocab_size, device=dev, generator=gen) * 3
    samplers = [ReplySampler(SamplingParams()) for _ in range(batch)]
    rng = random.Random(batch)
    for sm in samplers:
        for _ in range(64):
            sm.observe(rng.randrange(1, 65000), "x")
    banned = [{0} for _ in range(batch)]
    sample(logits, samplers, banned, [""] * batch)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        sample(logits, samplers, banned, [""] * batch)
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


def _measure_backend(name, backend, device, channels, args, max_channels=None) -> dict:
    res: dict = {"single_decode_tok_s": None, "aggregate_decode_tok_s": {}, "decode_step_ms": {},
                 "prefill_tok_s": None, "workload": {}}
    seconds = args.seconds
    _log(f"{name}: single-stream decode")
    d = measure_decode(backend, 1, seconds, args.max_steps, device)
    res["single_decode_tok_s"] = d["tok_s"]
    for n in channels:
        if max_channels and n > max_channels:
            continue
        _log(f"{name}: aggregate decode at {n} channels")
        d = d if n == 1 else measure_decode(backend, n, seconds, args.max_steps, device)
        res["aggregate_decode_tok_s"][str(n)] = d["tok_s"]
        res["decode_step_ms"][str(n)] = d["step_ms"]
    if name == "engine":
        res["graph_step_ms"] = {str(n): measure_graph_step(backend, n) for n in channels}
        res["sample_ms"] = {str(n): measure_sampler(backend, n) for n in channels}
    _log(f"{name}: prefill of a {args.card_tokens}-token card")
    res["prefill_tok_s"] = measure_prefill(backend, device, args.card_tokens, repeats=args.prefill_repeats)
    if name == "engine":
        res["prefill_chunked_256_tok_s"] = measure_prefill(backend, device, args.card_tokens, repeats=1, chunk=256)
    if not args.no_workload:
        for n in channels:
            if max_channels and n > max_channels:
                continue
            _log(f"{name}: bot workload at {n} channels")
            res["workload"][str(n)] = measure_workload(backend, n, device)
    return res


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
    precision = args.precision or ("fp16" if device == "cuda" else "fp32")
    strategy = f"{device} {precision}"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    version, layers, dim = PRESETS[preset]
    from bot.engine.batched import BatchedBackend

    torch.manual_seed(0)

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))

    result: dict = {"preset": preset, "version": version, "layers": layers, "n_embd": dim, "strategy": strategy,
                    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "torch": torch.__version__, "channels": channels,
                    "card_tokens": args.card_tokens}
    _log(f"preset {preset}: RWKV-{version} {layers}x{dim}, {strategy}; generating random weights")
    raw = _make_weights(version, layers, dim, dtype, device)
    engine = BatchedBackend(f"random-{preset}", strategy, max_batch=max(channels), weights=raw)
    # The engine holds its own copy: keep the checkpoint tensors only for the package, and off the GPU.
    raw = None if args.no_baseline else {k: v.cpu() for k, v in raw.items()}
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    _log(f"engine ready: kernels={engine.ops.name}, cuda graphs={engine.use_graphs}")
    if args.profile:
        _log("profiling")
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        result["profile"] = profile_engine(engine, device, Path(args.profile), batches=(1, min(64, max(channels))))
    if device == "cuda":
        engine.warmup(channels)
    result["baseline_rwkv_pip"] = None
    result["greedy_agreement"] = None
    result["engine"] = _measure_backend("engine", engine, device, channels, args)
    result["engine"]["kernels"] = engine.ops.name
    save()  # a run cut short (a time limit) keeps what it measured
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
            result["baseline_rwkv_pip"] = _measure_backend("rwkv-pip", baseline, device, channels, args,
                                                           max_channels=args.baseline_max_channels)
            save()
            _log("greedy agreement")
            agreement = greedy_agreement(engine, baseline, args.agreement_sequences, args.agreement_tokens, device)
            result["greedy_agreement"] = agreement["rate"]
            result["greedy_agreement_detail"] = agreement
    save()
    print(format_table(result))
    return 0


def format_table(result: dict) -> str:
    eng, base = result["engine"], result.get("baseline_rwkv_pip") or {}
    fmt = lambda v: "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
    lines = [f"RWKV-{result['version']} {result['preset']} ({result['layers']}x{result['n_embd']}), "
             f"{result['strategy']}, {result['device']}", "",
             f"{'tokens/s':<34}{'engine':>14}{'rwkv package':>16}"]
    lines.append(f"{'single-stream decode':<34}{fmt(eng['single_decode_tok_s']):>14}"
                 f"{fmt(base.get('single_decode_tok_s')):>16}")
    for n in result["channels"]:
        lines.append(f"{f'aggregate decode, {n} channels':<34}{fmt(eng['aggregate_decode_tok_s'].get(str(n))):>14}"
                     f"{fmt((base.get('aggregate_decode_tok_s') or {}).get(str(n))):>16}")
    card = f"prefill, {result['card_tokens']}-token card"
    lines.append(f"{card:<34}{fmt(eng['prefill_tok_s']):>14}"
                 f"{fmt(base.get('prefill_tok_s')):>16}")
    if eng["workload"]:
        lines += ["", f"bot workload ({MESSAGE_TOKENS}-token message, {REPLY_TOKENS} tokens back per channel):",
                  f"{'channels':<10}{'TTFT p50 s':>12}{'TTFT p95 s':>12}{'total s':>10}   "
                  f"{'rwkv package: p50':>18}{'p95':>8}{'total':>8}"]
        for n in result["channels"]:
            e = eng["workload"].get(str(n))
            b = (base.get("workload") or {}).get(str(n))
            if e:
                tail = f"{b['ttft_p50_s']:>18.2f}{b['ttft_p95_s']:>8.2f}{b['total_s']:>8.1f}" if b else f"{'-':>18}"
                lines.append(f"{n:<10}{e['ttft_p50_s']:>12.3f}{e['ttft_p95_s']:>12.3f}{e['total_s']:>10.2f}   {tail}")
    if result.get("greedy_agreement") is not None:
        d = result["greedy_agreement_detail"]
        lines += ["", f"greedy agreement with the package: {100 * result['greedy_agreement']:.1f}% of "
                      f"{d['positions']} teacher-forced positions (first difference at {d['first_difference']})"]
    return "\n".join(lines)

