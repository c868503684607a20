"""Sampling parameters: names, valid ranges, defaults and validation.

Kept apart from the samplers (bot.engine.sampling) so that configuration and commands can validate parameters
without importing torch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping


class ParamError(ValueError):
    """A bad parameter name or value; the message names the parameter and its valid range."""


@dataclass(frozen=True)
class ParamSpec:
    kind: type
    low: float
    high: float
    help: str

    def describe(self) -> str:
        low = int(self.low) if self.kind is int else self.low
        high = int(self.high) if self.kind is int else self.high
        return f"{'an integer' if self.kind is int else 'a number'} from {low} to {high}"


SPECS: dict[str, ParamSpec] = {
    "temperature": ParamSpec(float, 0.0, 5.0, "randomness; 0 = always the most likely token (greedy)"),
    "top_p": ParamSpec(float, 0.0, 1.0, "nucleus: keep the most likely tokens up to this total probability"),
    "top_k": ParamSpec(int, 0, 65536, "keep only the k most likely tokens; 0 = off"),
    "min_p": ParamSpec(float, 0.0, 1.0, "drop tokens less likely than min_p x the top token's probability"),
    "presence_penalty": ParamSpec(float, -2.0, 2.0, "subtracted from tokens already used in this reply"),
    "frequency_penalty": ParamSpec(float, -2.0, 2.0, "subtracted per use of a token in this reply"),
    "penalty_decay": ParamSpec(float, 0.0, 1.0, "penalty counts are multiplied by this after each token"),
    "mirostat_tau": ParamSpec(float, 0.0, 20.0, "Mirostat target surprise in bits; 0 = off"),
    "mirostat_lr": ParamSpec(float, 0.0, 1.0, "Mirostat learning rate"),
    "mirostat_lr_decay": ParamSpec(float, 0.0, 1.0, "Mirostat learning-rate decay"),
    "max_tokens": ParamSpec(int, 1, 2000, "longest reply in tokens"),
}


@dataclass(frozen=True)
class SamplingParams:
    # The original web UI's recommended set (its README): Mirostat tau 5, lr 0.1, decay 0.01, top_p 0.6, temp 2.
    temperature: float = 2.0
    top_p: float = 0.6
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.1
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    mirostat_tau: float = 5.0
    mirostat_lr: float = 0.1
    mirostat_lr_decay: float = 0.01
    max_tokens: int = 300

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: "SamplingParams | None" = None) -> "SamplingParams":
        """Validated; unknown names and out-of-range values raise ParamError."""
        return (base or cls()).updated({k: v for k, v in values.items()})

    def updated(self, changes: Mapping[str, Any]) -> "SamplingParams":
        parsed = {name: parse_param(name, value) for name, value in changes.items()}
        return replace(self, **parsed)


PARAM_NAMES = tuple(f.name for f in fields(SamplingParams))


def parse_param(name: str, value: Any) -> float | int:
    spec = SPECS.get(name)
    if spec is None:
        raise ParamError(f"unknown parameter {name!r}; valid: {', '.join(PARAM_NAMES)}")
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if spec.kind is int:
            if not number.is_integer():
                raise ValueError
            number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise ParamError(f"{name} must be {spec.describe()}, got {str(value)[:40]!r}") from None
    if not (spec.low <= number <= spec.high) or (isinstance(number, float) and math.isnan(number)):
        raise ParamError(f"{name} must be {spec.describe()}, got {value}")
    return number
