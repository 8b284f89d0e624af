"""Helpers shared by the experiments: seeding, thread control, versions, config hashing,
atomic file writes, progress events and the slope-with-confidence-interval fit.

Nothing here prints; experiments report progress through a callback taking
:class:`ProgressEvent`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ProgressEvent",
    "ProgressCallback",
    "SlopeFit",
    "config_hash",
    "load_keyed",
    "run_rng",
    "slope_with_ci",
    "t_cdf",
    "t_quantile",
    "torch_threads",
    "versions",
    "save_keyed",
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
    """Versions of Python, platform, torch, numpy, pandas, specbound, and transformers and
    Ray when installed."""
    out: dict[str, str] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
    }
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        out["torch"] = "missing"
    try:
        import pandas

        out["pandas"] = pandas.__version__
    except ImportError:  # pragma: no cover
        out["pandas"] = "missing"
    from importlib.metadata import PackageNotFoundError, version

    try:
        out["specbound"] = version("specbound")
    except PackageNotFoundError:  # pragma: no cover - not installed
        out["specbound"] = "unknown"
    for optional in ("transformers", "ray"):  # the trainers of E2/E3 and the cluster runner
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
    """Write ``text`` to ``path`` via a temporary file and rename (no half-written files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_keyed(path: str | Path, key: Any, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` with the hash of ``key`` (and ``key`` as JSON), atomically:
    a run cache entry that :func:`load_keyed` returns only for the same ``key``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"key_hash": config_hash(key), "key": json.dumps(key, sort_keys=True, default=str), **payload}, tmp)
    os.replace(tmp, path)


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


# --------------------------------------------------------------------------- statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t distribution (no SciPy): bisection on :func:`t_cdf` (the
    regularised incomplete beta function by its continued fraction), to ~1e-12.

    ``df = inf`` gives the normal quantile.
    """
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    if df <= 0:
        raise ValueError("df must be positive")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if p == 0.5:
        return 0.0
    if math.isinf(df):
        # normal quantile by bisection on erf
        lo, hi = 0.0, 40.0
        for _ in range(200):
            mid = (lo + hi) / 2
            if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
        if hi > 1e12:  # pragma: no cover
            raise ValueError("quantile out of range")
    for _ in range(80):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class SlopeFit:
    """Ordinary least-squares fit ``y ≈ intercept + slope · x`` with a two-sided
    ``level`` confidence interval for the slope (Student t, ``n − 2`` degrees of freedom).

    With fewer than 3 points or constant ``x`` the interval is undefined (NaN) and
    ``contains_zero`` is ``None``.
    """

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    stderr: float
    n: int
    level: float

    @property
    def contains_zero(self) -> bool | None:
        if math.isnan(self.ci_low) or math.isnan(self.ci_high):
            return None
        return bool(self.ci_low <= 0.0 <= self.ci_high)


def slope_with_ci(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                  level: float = 0.95) -> SlopeFit:
    """OLS slope of ``y`` on ``x`` with a ``level`` confidence interval.

    ``x``, ``y``: shape ``[n]``. Pairs with a non-finite value are dropped first.
    The interval is ``slope ± t_{(1+level)/2, n−2} · se`` with
    ``se = sqrt(SSR / (n − 2) / Σ (x − x̄)²)``.
    """
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length ({xa.size} vs {ya.size})")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = int(xa.size)
    nan = float("nan")
    if n < 2:
        return SlopeFit(nan, nan, nan, nan, nan, n, level)
    xm, ym = xa.mean(), ya.mean()
    sxx = float(((xa - xm) ** 2).sum())
    if sxx == 0.0:
        return SlopeFit(nan, nan, nan, nan, nan, n, level)
    slope = float(((xa - xm) * (ya - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    if n < 3:
        return SlopeFit(slope, intercept, nan, nan, nan, n, level)
    resid = ya - (intercept + slope * xa)
    ssr = float((resid**2).sum())
    se = math.sqrt(ssr / (n - 2) / sxx)
    q = t_quantile((1 + level) / 2, n - 2)
    return SlopeFit(slope, intercept, slope - q * se, slope + q * se, se, n, level)
