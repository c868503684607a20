"""Libraries a configured feature needs (a platform, a database driver, Prometheus), imported before the model
loads, so that a missing one is one line naming what to install instead of a traceback minutes into the start."""
from __future__ import annotations

import importlib
import importlib.metadata
import re

# Import name -> the distribution that provides it, where the two differ.
_DISTRIBUTIONS = {"telegram": "python-telegram-bot", "discord": "discord.py", "prometheus_client": "prometheus-client",
                  "yaml": "pyyaml", "psycopg2": "psycopg2-binary",
                 "nats": "nats-py"}


class MissingLibrary(Exception):
    """One line: what needs the library and the pip command that installs it."""


def import_optional(module: str, needed_for: str):
    """`importlib.import_module(module)`, with a missing library (the module itself or one it imports) raised as
    MissingLibrary."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise missing_library(error, needed_for) from None


def missing_library(error: ModuleNotFoundError, needed_for: str) -> MissingLibrary:
    name = (error.name or str(error)).split(".")[0]
    distribution = _DISTRIBUTIONS.get(name, name)
    return MissingLibrary(f"{needed_for} needs the Python package {distribution}, which is not installed: "
                          f"pip install '{requirement(distribution)}'")


def requirement(distribution: str) -> str:
    """The requirement rwkv-bot declares for `distribution` (with its version range), else the bare name."""
    try:
        declared = importlib.metadata.requires("rwkv-bot") or []
    except importlib.metadata.PackageNotFoundError:
        declared = []
    wanted = _canonical(distribution)
    for line in declared:
        spec = line.split(";")[0].strip()
        match = re.match(r"[A-Za-z0-9._-]+", spec)
        if match and _canonical(match[0]) == wanted:
            return spec
    return distribution


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
