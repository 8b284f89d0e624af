"""Grids of checkpoints for E2: the BERT miniatures (hub / local cache), grid files, fits.

* :func:`miniature_ids` — the 24 ``google/bert_uncased_L-{L}_H-{N}_A-{N/64}`` ids of Turc et al.
* :func:`resolve_hub_checkpoint` — a hub id → a local snapshot folder, from the Hugging Face
  cache (``HF_HUB_CACHE`` / ``HF_HOME`` read at call time) or downloaded when online.
* :func:`read_grid` — a CSV or JSON file listing ``source, L, N[, name]``.

The growth-exponent fits are in :mod:`specbound.experiments.scaling.fits`.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specbound.errors import InputError

MINIATURE_LS: tuple[int, ...] = (2, 4, 6, 8, 10, 12)
MINIATURE_NS: tuple[int, ...] = (128, 256, 512, 768)
#: ``--quick`` with the miniatures: the four smallest.
MINIATURE_QUICK: tuple[tuple[int, ...], tuple[int, ...]] = ((2, 4), (128, 256))

_WEIGHT_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json"]


@dataclass(frozen=True)
class GridEntry:
    """One checkpoint of a grid: where it is (path or hub id) and its depth L and width N."""

    name: str
    source: str
    L: int
    N: int


def miniature_id(L: int, N: int) -> str:
    return f"google/bert_uncased_L-{L}_H-{N}_A-{N // 64}"


def miniature_ids(quick: bool = False) -> list[GridEntry]:
    """The BERT miniatures grid (24 models; 4 with ``quick``), ordered by (L, N)."""
    Ls, Ns = MINIATURE_QUICK if quick else (MINIATURE_LS, MINIATURE_NS)
    return [GridEntry(f"L{L}_N{N}", miniature_id(L, N), L, N) for L in Ls for N in Ns]


# -- hub / cache --------------------------------------------------------------------------------
class CheckpointUnavailable(InputError):
    """A hub checkpoint is neither in the local cache nor downloadable; ``offline`` if no network."""

    def __init__(self, message: str, offline: bool):
        super().__init__(message)
        self.offline = offline


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time.

    ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub`` (huggingface_hub's own order; it reads them at import time).
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        any(folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").is_file()
    )


def _from_cache(repo_id: str, cache_dir: Path) -> Path | None:
    from huggingface_hub import snapshot_download

    for patterns in (_WEIGHT_PATTERNS, _WEIGHT_PATTERNS + ["pytorch_model.bin"]):
        try:
            folder = Path(
                snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True, allow_patterns=patterns)
            )
        except Exception:
            return None
        if _has_weights(folder):
            return folder
    return None


def resolve_hub_checkpoint(
    repo_id: str, cache_dir: str | os.PathLike | None = None, allow_download: bool = True
) -> Path:
    """Local folder (config.json + weights) of hub model ``repo_id``: cached, else downloaded.

    Looks in ``cache_dir`` (default :func:`hub_cache_dir`) first. Downloads only when
    ``allow_download`` and ``HF_HUB_OFFLINE`` is not set: safetensors weights when the repo has
    them, else ``pytorch_model.bin``. Raises :class:`CheckpointUnavailable` (``offline=True``
    when the hub could not be reached) otherwise.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError("hub ids need huggingface_hub (pip install 'specbound[hf]').") from None
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hub_cache_dir()
    found = _from_cache(repo_id, cache)
    if found is not None:
        return found
    if not allow_download or _offline_env():
        raise CheckpointUnavailable(f"{repo_id}: not in the local cache ({cache}) and offline", offline=True)
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=_WEIGHT_PATTERNS, etag_timeout=10))
        if not _has_weights(folder):
            folder = Path(
                snapshot_download(
                    repo_id, cache_dir=cache, allow_patterns=_WEIGHT_PATTERNS + ["pytorch_model.bin"], etag_timeout=10
                )
            )
    except Exception as e:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        offline = isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or "connect" in str(e).lower()
        what = "the hub cannot be reached" if offline else f"download failed ({type(e).__name__})"
        raise CheckpointUnavailable(f"{repo_id}: not in the local cache ({cache}) and {what}", offline=offline) from None
    if not _has_weights(folder):
        raise CheckpointUnavailable(f"{repo_id}: the repository has no config.json with weights", offline=False)
    return folder


def resolve_entries(
    entries: list[GridEntry], cache_dir: str | os.PathLike | None = None, allow_download: bool = True
) -> tuple[list[tuple[GridEntry, str]], list[tuple[GridEntry, str]]]:
    """Split ``entries`` into (present: entry + local path, missing: entry + reason).

    Local paths are kept as they are; hub ids go through :func:`resolve_hub_checkpoint`. After
    the first failure to reach the hub, no further downloads are attempted (offline).
    """
    present: list[tuple[GridEntry, str]] = []
    missing: list[tuple[GridEntry, str]] = []
    reachable = allow_download
    for e in entries:
        p = Path(e.source).expanduser()
        if p.exists():
            present.append((e, str(p)))
            continue
        if "/" not in e.source or e.source.startswith((".", "/", "~")):
            missing.append((e, f"{e.source}: no such file or folder"))
            continue
        try:
            present.append((e, str(resolve_hub_checkpoint(e.source, cache_dir, allow_download=reachable))))
        except CheckpointUnavailable as err:
            missing.append((e, str(err)))
            if err.offline:
                reachable = False
    return present, missing


# -- grid files ---------------------------------------------------------------------------------
def _positive_int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{where}: {what} must be a positive integer, got {value!r}.")
    try:
        f = float(str(value).strip())
    except ValueError:
        raise InputError(f"{where}: {what} must be a positive integer, got {value!r}.") from None
    if not math.isfinite(f) or f != int(f) or f <= 0:
        raise InputError(f"{where}: {what} must be a positive integer, got {value!r}.")
    return int(f)


def _entry(row: dict[str, Any], where: str) -> GridEntry:
    low = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    src = low.get("source", low.get("path"))
    if src is None or not str(src).strip():
        raise InputError(f"{where}: missing 'source' (a model folder or a hub id).")
    if low.get("l") in (None, ""):
        raise InputError(f"{where}: missing 'L' (number of layers).")
    if low.get("n") in (None, ""):
        raise InputError(f"{where}: missing 'N' (hidden size).")
    L = _positive_int(low["l"], "L", where)
    N = _positive_int(low["n"], "N", where)
    name = str(low.get("name") or "").strip() or f"L{L}_N{N}"
    return GridEntry(name=name, source=str(src).strip(), L=L, N=N)


def read_grid(path: str | os.PathLike) -> list[GridEntry]:
    """Read a grid file: CSV with a header (``source,L,N[,name]``) or JSON.

    JSON: a list of objects ``{"source": ..., "L": ..., "N": ..., "name": ...}`` or an object
    with such a list under ``"models"``. Relative paths are taken relative to the file's folder.
    Bad rows raise :class:`InputError` naming the file and row; duplicate (L, N) points too.
    """
    from specbound.weights.files import read_text

    p = Path(path)
    text = read_text(p, "grid file")  # regular files only (a FIFO never blocks), one-line errors
    rows: list[tuple[dict[str, Any], str]]
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InputError(f"{p}: not valid JSON ({e}).") from None
        if isinstance(data, dict):
            data = data.get("models")
        if not isinstance(data, list):
            raise InputError(f"{p}: expected a JSON list of models or an object with a 'models' list.")
        rows = []
        for i, r in enumerate(data):
            if not isinstance(r, dict):
                raise InputError(f"{p}: entry {i}: expected an object with source, L, N, got {type(r).__name__}.")
            rows.append((r, f"{p}: entry {i}"))
    elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
        fields = {str(f).strip().lower() for f in (reader.fieldnames or [])}
        need = {"l", "n"} | ({"source"} if "path" not in fields else set())
        if not need <= fields:
            raise InputError(
                f"{p}: the header must name the columns source, L, N (and optionally name); "
                f"got {', '.join(reader.fieldnames or []) or 'nothing'}."
            )
        rows = [(r, f"{p}: row {i + 2}") for i, r in enumerate(reader) if any((v or "").strip() for v in r.values() if isinstance(v, str))]
    else:
        raise InputError(f"{p}: a grid file must be .csv or .json.")
    if not rows:
        raise InputError(f"{p}: the grid file lists no models.")
    entries = [_entry(r, where) for r, where in rows]
    seen: dict[tuple[int, int], str] = {}
    out = []
    for e, (_, where) in zip(entries, rows):
        if (e.L, e.N) in seen:
            raise InputError(f"{where}: (L={e.L}, N={e.N}) is listed twice (also {seen[(e.L, e.N)]}).")
        seen[(e.L, e.N)] = where
        src = Path(e.source).expanduser()
        if not src.is_absolute() and (p.parent / src).exists():
            e = GridEntry(e.name, str(p.parent / src), e.L, e.N)
        out.append(e)
    return out
