"""Exactness of the batched engine against the plain `rwkv` package (CPU, fp32, demo models).

The package picks RWKV-6 or RWKV-7 at import time, so each version runs in its own subprocess: this file is also
the worker (`python tests/test_batched_exact.py VERSION DIR`), which prints one JSON line of results.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HALF_PRECISION_PROMPTS = 8
HALF_PRECISION_SLACK = 1.2  # measured on three instruction sets (AVX-512, AVX2, SSE4.1): 0.58-0.73 of the package


def _run_worker(version: int, tmp_path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, __file__, str(version), str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=[7, 6])
def results(request, tmp_path_factory):
    return _run_worker(request.param, tmp_path_factory.mktemp(f"v{request.param}"))


def test_greedy_continuous_batching_matches_package(results):
    """Slots join and leave between steps, prefill chunks of different sizes share steps with decoding rows."""
    assert results["tokens_checked"] >= 600
    assert results["mismatches"] == [], results["mismatches"][:3]


def test_decode_graph_path_and_packed_path_agree(results):
    assert results["decode_vs_packed_max_diff"] < 1e-3


def test_state_round_trip_between_backends(results):
    assert results["batched_to_package"] == "equal"
    assert results["package_to_batched"] == "equal"


def test_saved_state_layout_matches_package(results):
    assert results["state_layout"] == "equal"
    assert results["state_max_diff"] < 1e-3


def test_batched_greedy_sampler_is_argmax(results):
    assert results["sampler_greedy"] == "equal"


def test_half_precision_is_as_close_to_fp32_as_the_package(results):
    """Both in fp16 against the package in fp32, averaged over prompts: one prompt's error is mostly rounding luck
    and moves with the CPU's instruction set (on some x86-64 CPUs the engine's error on the first prompt alone was
    3x the package's while its mean was 0.6x). The bound is the package's own error, measured here."""
    errors = results["half_precision"]
    assert errors["engine"] <= HALF_PRECISION_SLACK * errors["package"], errors


# ------------------------------------------------------------------------------------------------------------
# The worker


def _greedy(logits_row) -> int:
    import torch
    return int(torch.argmax(logits_row))


def worker(version: int, directory: str) -> dict:
    import torch

    torch.manual_seed(0)
    from bot.engine.batched import BatchedBackend
    from bot.tools.demo_model import write_demo_model
    from bot.engine.rwkv_pip import RwkvPipBackend
    from bot.engine.sampling import DeviceSampler, ReplySampler, SamplingParams, TokenTable
    from bot.engine.tokenizer import world_tokenizer

    dim, layers = (256, 3) if version == 7 else (192, 2)
    path = write_demo_model(Path(directory) / f"demo{version}", version=version, layers=layers, dim=dim,
                            vocab=4096, seed=version, dtype=torch.float32)
    ref = RwkvPipBackend(path, "cpu fp32")
    eng = BatchedBackend(path, "cpu fp32", max_batch=8)
    rng = random.Random(version)
    out: dict = {"mismatches": []}

    # Reference: each sequence alone, prompt in one call, then greedy one token at a time.
    prompts = [[rng.randrange(1, 4096) for _ in range(n)] for n in (1, 9, 40, 70, 3)]
    gen_len = [150, 120, 100, 160, 90]
    expected = []
    for p, n in zip(prompts, gen_len):
        ref.load(0, ref.zero_state())
        logits = ref.forward([(0, p)])[0]
        toks = []
        for _ in range(n):
            toks.append(_greedy(logits))
            logits = ref.forward([(0, [toks[-1]])])[0]
        expected.append(toks)
    ref.release(0)

    # Batched: sequences join at different steps, prefill in chunks of different sizes, and leave when done.
    chunk = [4, 16, 7, 32, 64]
    join_at = [0, 0, 3, 5, 40]
    slot_of = [5, 1, 7, 0, 2]
    pending = [list(p) for p in prompts]
    got: list[list[int]] = [[] for _ in prompts]
    last: list[int | None] = [None] * len(prompts)
    active: set[int] = set()
    step = 0
    saved_mid = None
    while any(len(g) < n for g, n in zip(got, gen_len)):
        for j in range(len(prompts)):
            if join_at[j] == step:
                eng.load(slot_of[j], eng.zero_state())
                active.add(j)
        rows, who = [], []
        for j in sorted(active):
            if pending[j]:
                rows.append((slot_of[j], pending[j][: chunk[j]]))
                pending[j] = pending[j][chunk[j]:]
            else:
                rows.append((slot_of[j], [last[j]]))
            who.append(j)
        if rows:
            logits = eng.forward(rows)
            for k, j in enumerate(who):
                if not pending[j]:
                    t = _greedy(logits[k])
                    got[j].append(t)
                    last[j] = t
                    if len(got[j]) == gen_len[j]:
                        active.discard(j)
                        if j == 0:
                            saved_mid = eng.save(slot_of[j])
                        eng.release(slot_of[j])
        step += 1
    for j, (e, g) in enumerate(zip(expected, got)):
        for pos, (a, b) in enumerate(zip(e, g)):
            if a != b:
                out["mismatches"].append({"seq": j, "pos": pos, "package": a, "batched": b})
                break
    out["tokens_checked"] = sum(len(g) for g in got)

    # State layout: the batched state after sequence 0 equals the package's (same shapes/dtypes, close values).
    ref.load(0, ref.zero_state())
    ref.forward([(0, prompts[0] + expected[0][:-1])])
    ref_state = ref.save(0)
    same_layout = len(ref_state) == len(saved_mid) and all(
        a.shape == b.shape and a.dtype == b.dtype for a, b in zip(ref_state, saved_mid))
    out["state_layout"] = "equal" if same_layout else "different"
    out["state_max_diff"] = max(float((a - b).abs().max()) for a, b in zip(ref_state, saved_mid))

    # Round trip: a batched state continues identically in the package, and the other way round.
    def continue_greedy(backend, state, first, n):
        backend.load(3, state)
        logits = backend.forward([(3, [first])])[0]
        toks = []
        for _ in range(n):
            toks.append(_greedy(logits))
            logits = backend.forward([(3, [toks[-1]])])[0]
        backend.release(3)
        return toks

    a = continue_greedy(ref, saved_mid, expected[0][-1], 60)
    b = continue_greedy(eng, saved_mid, expected[0][-1], 60)
    out["batched_to_package"] = "equal" if a == b else f"differs at {next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)}"
    a = continue_greedy(ref, ref_state, expected[0][-1], 60)
    b = continue_greedy(eng, ref_state, expected[0][-1], 60)
    out["package_to_batched"] = "equal" if a == b else f"differs at {next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)}"

    # The decode path (one token per row) and the packed path compute the same logits.
    eng.load(0, ref_state)
    eng.load(1, ref_state)
    l1 = eng.forward([(0, [17])])
    l2 = eng.prefill([[17]], [eng._rows[1]])
    out["decode_vs_packed_max_diff"] = float((l1 - l2).abs().max())

    # The device sampler with greedy params is argmax over the adjusted logits (penalties and bans included).
    logits = torch.randn(6, 4096) * 3
    params = SamplingParams(temperature=0.0, presence_penalty=0.5, frequency_penalty=0.3)
    samplers = [ReplySampler(params) for _ in range(6)]
    tok = world_tokenizer()
    device = DeviceSampler(6, 4096, "cpu", TokenTable(tok, 4096, "cpu"))
    banned = [{0, int(torch.argmax(logits[i]))} for i in range(6)]
    device.begin(list(range(6)), [params] * 6, list(range(6)), [int(torch.argmax(logits[i])) for i in range(6)])
    for i, s in enumerate(samplers):
        for t in torch.randint(0, 4096, (20,)).tolist():
            s.observe(t, tok.token_bytes(t).decode("utf-8", "replace"))
            device.observe([i], [t], reply_bytes=False)
    ref_tokens = [s.sample(logits[i], banned[i], "") for i, s in enumerate(samplers)]
    got_tokens = device.sample(logits, torch.arange(6), torch.ones(6, dtype=torch.bool)).tolist()
    out["sampler_greedy"] = "equal" if ref_tokens == got_tokens else f"{ref_tokens} != {got_tokens}"
    out["half_precision"] = half_precision_errors(version, directory)
    return out


def half_precision_errors(version: int, directory: str) -> dict:
    """Logits in fp16 against the package's fp32, for the engine and for the package itself, on 7 layers: deep
    enough for RWKV-6's fp16 rescaling (the residual halved every 6 layers, output matrices scaled to match)."""
    import torch

    from bot.engine.batched import BatchedBackend
    from bot.tools.demo_model import write_demo_model
    from bot.engine.rwkv_pip import RwkvPipBackend

    path = write_demo_model(Path(directory) / f"deep{version}", version=version, layers=7, dim=128, vocab=4096,
                            seed=10 + version, dtype=torch.float32)
    rng = random.Random(5)
    prompts = [[rng.randrange(1, 4096) for _ in range(32)] for _ in range(HALF_PRECISION_PROMPTS)]

    def logits(backend):
        out = []
        for prompt in prompts:
            backend.load(0, backend.zero_state())
            out.append(backend.forward([(0, prompt)])[0].float().cpu())
        return out

    ref = logits(RwkvPipBackend(path, "cpu fp32"))
    mean_error = lambda rows: sum(float((x - r).norm() / r.norm()) for x, r in zip(rows, ref)) / len(ref)
    return {"engine": mean_error(logits(BatchedBackend(path, "cpu fp16", max_batch=2))),
            "package": mean_error(logits(RwkvPipBackend(path, "cpu fp16")))}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(worker(int(sys.argv[1]), sys.argv[2])))
