"""Finding out what a checkpoint is and loading it through the `rwkv` package.

The package picks its model class at import time (RWKV_V7_ON), so the version is read from the checkpoint's keys
before the package is imported, and one process serves one version.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from pathlib import Path

import torch


class ModelError(Exception):
    """A model that cannot be served; the message is one line for the user."""


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file for a configured path: the file as named, else the name with `.pth` added. A directory
    or a missing file is reported as the owner wrote it."""
    p = Path(path).expanduser()
    if p.is_dir():
        inside = sorted(child.name for child in p.glob("*.pth"))[:5]
        hint = f"; it holds {', '.join(inside)}" if inside else "; it holds no .pth file"
        raise ModelError(f"model path {p} is a directory: name the checkpoint file in it{hint}")
    if p.is_file():
        return p
    with_suffix = p.with_name(p.name + ".pth")
    if p.suffix != ".pth" and with_suffix.is_file():
        return with_suffix
    raise ModelError(f"model file not found: {p}" + ("" if p.suffix == ".pth" else f" (nor {with_suffix.name})"))


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say so in one line
        raise ModelError(f"cannot read model file {path}: {exc.__class__.__name__}: {exc}") from None


def detect_version(weights: dict[str, torch.Tensor]) -> int:
    if "blocks.0.att.r_k" in weights and "blocks.0.att.x_r" in weights:
        return 7
    if any(".att.time_maa_" in k for k in weights) and "blocks.0.att.time_faaaa" in weights:
        return 6
    raise ModelError("unsupported checkpoint: only RWKV-6 (x060) and RWKV-7 (x070) World/G1 models are served")


def file_id(path: Path) -> str:
    """A cheap content id: size plus 1 MiB from each end (hashing a 15 GB file at every start would be slow)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:24]


# The strategies RWKV-7 supports in the package, and all the batched engine serves.
# What RWKV-7 supports in the package, and every strategy the batched engine serves.
STRATEGY = re.compile(r"^(cuda(:\d+)?|cpu) (fp16|fp32|bf16)$")


def check_strategy(version: int, strategy: str) -> None:
    if version == 7 and not STRATEGY.match(strategy):
        raise ModelError(f"model.strategy {strategy!r}: RWKV-7 supports only 'cuda|cpu fp16|fp32|bf16'")


def default_strategy() -> str:
    return "cuda fp16" if torch.cuda.is_available() else "cpu fp32"


@contextlib.contextmanager
def stdout_to_stderr():
    """The package prints banners and its CUDA build logs on stdout; stdout is the user's. Redirect the fd too,
    since compiler subprocesses write to it directly."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def import_rwkv_package(version: int, use_cuda_kernel: bool):
    """Import `rwkv.model` configured for `version`; refuse a second version in the same process."""
    wanted = "1" if version == 7 else "0"
    if "rwkv.model" in sys.modules:
        if os.environ.get("RWKV_V7_ON", "0") != wanted:
            raise ModelError("this process already serves another RWKV version; start a new process")
        return sys.modules["rwkv.model"]
    os.environ["RWKV_V7_ON"] = wanted
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ["RWKV_CUDA_ON"] = "1" if use_cuda_kernel else "0"
    with stdout_to_stderr():
        import rwkv.model
    return rwkv.model


def load_state_file(path: str | Path, version: int, n_layer: int, n_embd: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """A state-tuning file (`blocks.{i}.att.time_state`) as an initial state in the package's layout."""
    try:
        data = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read model.state file {path}: {exc}") from None
    state: list[torch.Tensor] = []
    for i in range(n_layer):
        key = f"blocks.{i}.att.time_state"
        if key not in data:
            raise ModelError(f"model.state file {path} lacks {key} (does it belong to this model?)")
        kv = data[key].float()
        if version == 6:  # v5/v6 files store [head, value, key]; the package's state is [head, key, value]
            kv = kv.transpose(1, 2)
        state += [torch.zeros(n_embd, dtype=dtype), kv.contiguous(), torch.zeros(n_embd, dtype=dtype)]
    return state
