"""Helpers shared by the experiments: seeding, thread control, versions, config hashing,
atomic file writes, a keyed run cache and progress events. (The slope fit is in
:mod:`specbound.experiments.stats`.)

Nothing here prints; experiments report progress through a callback taking
:class:`ProgressEvent`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ProgressEvent",
    "ProgressCallback",
    "config_hash",
    "load_keyed",
    "run_rng",
    "torch_threads",
    "versions",
    "save_keyed",
    "write_csv_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


# --------------------------------------------------------------------------- seeding


def run_rng(base_seed: int, *keys: int) -> np.random.Generator:
    """A NumPy generator for one run, derived from ``base_seed`` and integer ``keys``.

    ``SeedSequence([base_seed, *keys])`` gives statistically independent streams for
    different keys, and the stream of a run depends only on its own keys, never on which
    other runs exist. PCG64 output is identical on every platform.
    """
    if base_seed < 0 or any(k < 0 for k in keys):
        raise ValueError("seeds and seed keys must be non-negative integers")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([base_seed, *keys])))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` and restore the previous value after.

    ``None`` leaves the setting alone.
    """
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- metadata


def versions() -> dict[str, str]:
    """Versions of Python, the platform and every library an experiment may use (one
    function for E1–E3): numpy, torch, pandas, matplotlib, safetensors, scipy and specbound
    (``"not installed"`` when missing), plus transformers, huggingface_hub and Ray when
    installed. Read from the installed distributions' metadata: nothing is imported."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("numpy", "torch", "pandas", "matplotlib", "safetensors", "scipy", "specbound"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:  # pragma: no cover - a required dependency
            out[dist] = "not installed"
    for optional in ("transformers", "huggingface_hub", "ray"):  # the trainers of E2/E3, the hub, the cluster runner
        try:
            out[optional] = version(optional)
        except PackageNotFoundError:
            pass
    return out


def config_hash(obj: Any, length: int = 16) -> str:
    """Stable hex digest of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`specbound.writing.write_text`: a temporary
    file in the same folder, fsync, rename, mode from the umask; a symlink's target is written)."""
    from specbound.writing import write_text

    write_text(path, text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv_atomic(path: str | Path, df: Any, **to_csv: Any) -> None:
    """Write a DataFrame as CSV (``index=False`` unless given), atomically."""
    to_csv.setdefault("index", False)
    write_text_atomic(path, df.to_csv(**to_csv))


def save_keyed(path: str | Path, key: Any, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` with the hash of ``key`` (and ``key`` as JSON), atomically:
    a run cache entry that :func:`load_keyed` returns only for the same ``key``."""
    import io

    import torch

    from specbound.writing import write_bytes

    buf = io.BytesIO()
    torch.save({"key_hash": config_hash(key), "key": json.dumps(key, sort_keys=True, default=str), **payload}, buf)
    write_bytes(path, buf.getvalue())


def load_keyed(path: str | Path, key: Any) -> dict[str, Any] | None:
    """The entry :func:`save_keyed` wrote at ``path`` for ``key``; ``None`` if there is none,
    it cannot be read (e.g. a crash while writing) or it was written for another key."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(blob, dict) or blob.get("key_hash") != config_hash(key):
        return None
    return blob


# --------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of an experiment.

    ``kind`` is ``"start"`` (``total`` runs planned), ``"group"`` (training of a batch of
    runs is under way; ``info`` has epoch / active runs), ``"run"`` (one run finished;
    ``done`` of ``total``; ``info`` has the run's summary, ``cached`` says whether it was
    reused from disk) or ``"end"``.
    """

    kind: str
    done: int = 0
    total: int = 0
    message: str = ""
    cached: bool = False
    info: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]


class ExperimentResult(dict):  # type: ignore[type-arg]
    """What an experiment returns as a dict of tables (E1's ``runs``/``trends``/``config``/
    ``files``, E3's ``models``/``scores``/...): used as the plain dict it is, with a short
    ``repr`` and a notebook display of its main tables (``OUT/report.html`` has it all).
    Subclasses name their experiment command in ``command``."""

    command = ""

    def __repr__(self) -> str:
        from specbound.report.experiments import short_repr

        return short_repr(self.command, self)

    def _repr_html_(self) -> str:
        from specbound.report.experiments import experiment_snippet

        return experiment_snippet(self.command, self)
