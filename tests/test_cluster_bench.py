"""`rwkv-bot bench-cluster`: the simulated model a worker runs on, and a small run of the whole bench.

The bench run is real: its own nats-server, `rwkv-bot worker --simulate` processes, a fresh PostgreSQL database
per worker count. It asserts what was answered and that the numbers exist, never how fast (the machine is
shared; speed is what the bench reports, not what CI checks).
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from bot.cluster.bench import SimulatedBackend, bench_channels, percentile, spread_ok
from bot.cluster.partitions import partition_of
from bot.engine.tokenizer import TURN_END_BYTES, world_tokenizer
from tests.conftest import POSTGRES_URL, run_cli


def test_simulated_backend_is_deterministic_and_model_shaped():
    backend = SimulatedBackend(1000.0)
    info = backend.info
    assert info.vocab_size == 65536 and info.n_layer == 1 and info.n_embd == 64
    state = backend.zero_state()
    assert [tuple(t.shape) for t in state] == [(64,), (1, 64, 64), (64,)]
    assert sum(t.numel() * 4 for t in state) == info.state_bytes

    def run(slot: int, prompt: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
        """Feed the prompt, then greedily the model's own tokens, as the engine does with temperature 0."""
        backend.load(slot, state)
        logits = backend.forward([(slot, prompt)])
        tokens = []
        for _ in range(steps):
            assert logits.shape == (1, 65536) and logits.dtype == torch.float32
            tokens.append(int(logits[0].argmax()))
            logits = backend.forward([(slot, [tokens[-1]])])
        saved = backend.save(slot)
        backend.release(slot)
        return tokens, saved

    prompt = world_tokenizer().encode("Mira: Hello there.\n\nUser: How are you?\n\nMira:")
    first, first_state = run(0, prompt, 12)
    again, again_state = run(3, prompt, 12)  # another slot, same inputs: the same reply and state
    other, _ = run(1, prompt[:-1], 12)
    assert first == again and all(torch.equal(a, b) for a, b in zip(first_state, again_state))
    assert other != first
    assert not torch.equal(first_state[0], state[0]), "the state carries what was fed"
    assert all(t.abs().sum() == 0 for t in state), "the caller's state is never changed"

    text = world_tokenizer().decode(first)
    turn_end = world_tokenizer().encode(TURN_END_BYTES.decode())[0]
    assert 0 not in first and turn_end not in first and TURN_END_BYTES.decode() not in text
    assert text.startswith(" ") and text.replace(" ", "").isalpha(), text

    backend.load(5, state)  # a batch of two rows, as the engine sends: each row its own logits
    backend.load(6, state)
    rows = backend.forward([(5, prompt), (6, prompt)])
    assert rows.shape == (2, 65536) and torch.equal(rows[0], rows[1])
    assert int(rows[0].argmax()) == first[0]


def test_simulated_backend_refuses_a_speed_that_is_not_one():
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            SimulatedBackend(bad)


def test_channels_spread_evenly_over_partitions():
    channels = bench_channels(40, 16, "bench-x")
    assert len(set(channels)) == 40
    counts = [sum(partition_of("bench", c, 16) == p for c in channels) for p in range(16)]
    assert max(counts) - min(counts) <= 1


def test_spread_and_percentile():
    status = {"workers": [{"worker": "a", "partitions": list(range(8))}, {"worker": "b", "partitions": list(range(8, 16))}],
              "unserved": [], "waiting": {}}
    assert spread_ok(status, ["a", "b"], 16)
    lopsided = {"workers": [{"worker": "a", "partitions": list(range(12))}, {"worker": "b", "partitions": list(range(12, 16))}],
                "unserved": [], "waiting": {}}
    assert not spread_ok(lopsided, ["a", "b"], 16)
    assert not spread_ok(dict(status, unserved=[3]), ["a", "b"], 16)
    assert not spread_ok(status, ["a", "b", "c"], 16), "a worker without partitions is not spread"
    assert percentile([], 0.95) == 0.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert percentile([1.0, 2.0], 0.5) == 1.0


def test_bench_cluster_refuses_bad_arguments_in_one_line(tmp_path):
    for args, words in ((["--workers", "1,x"], "--workers"), (["--channels", "0"], "--channels"),
                        (["--workers", "32"], "--partitions"),
                        (["--nats-server", str(tmp_path / "none")], "nats-server")):
        result = run_cli("bench-cluster", *args, "--database", "postgresql+asyncpg://nobody@127.0.0.1:1/x")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], result.stderr


def test_a_small_bench_answers_every_turn(tmp_path):
    if not POSTGRES_URL:
        pytest.skip("RWKV_TEST_POSTGRES_URL is not set (.ci/run sets it); the cluster bench needs PostgreSQL")
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not on PATH; the cluster bench needs it")
    out = tmp_path / "bench.json"
    result = run_cli("bench-cluster", "--workers", "1,2", "--channels", "8", "--turns", "2",
                     "--steps-per-second", "100", "--database", POSTGRES_URL, "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert [row["workers"] for row in data["rows"]] == [1, 2]
    for row in data["rows"]:
        assert row["replies"] == 8 * 2 and row["lost"] == 0, row
        assert row["replies_per_s"] > 0 and row["seconds"] > 0 and row["ratio"] > 0, row
        assert row["broker_samples"] == 8 * 2, row
        assert row["broker_p95_ms"] >= row["broker_p50_ms"] >= 0, row
    assert data["rows"][0]["ratio"] == 1.0
    assert "replies/s" in result.stdout and result.stdout.count("\n") >= 3, result.stdout
