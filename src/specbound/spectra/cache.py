"""A content-addressed cache of spectra: ``get`` / ``put`` around the spectra loop.

A layer's spectra are computed in independent *blocks* (``spectra/blocks.py``): ``qk`` (every
head's QK from ``W_Q``, ``W_K``), ``ov`` (``W_V``, ``W_O``), ``m_in``, ``m_out``, and the
value-path link ``vo`` (σ_1, ‖·‖_F², ‖·‖_{2,1} of ``W_V W_O``). Each block's cache key is a
BLAKE2b hash of

* the cache-format version :data:`CACHE_FORMAT`;
* the block name and the *policy* that produced it: the working dtype, the ``dense`` flag and
  the dtype the Gram matrices are accumulated in for every block; for ``m_in`` / ``m_out`` also
  the feed-forward method, the accuracy guard's tolerance for that dtype and the
  approximate-mode settings (QK/OV are exact in approximate mode too, so they share entries);
* the content hash of every tensor the block comes from: BLAKE2b over dtype, shape and the raw
  bytes of the canonical matrix as read from the checkpoint (before the upcast).

So a second run with other bound parameters (L_φ, grid, families) reads and hashes the weights
but does no linear algebra, and a fine-tuned model recomputes only the blocks whose tensors
changed (a LoRA on ``q_proj``/``v_proj`` recomputes QK and OV, not the feed-forward spectra).
The device is not in the key: CUDA and CPU results agree within the tolerance of README,
"Scale".

Entries are safetensors files ``DIR/v{CACHE_FORMAT}/<key[:2]>/<key>.safetensors`` holding the
spectra as tensors and, in the metadata, the key, the block, the policy, the matrix sizes and
a BLAKE2b checksum of the payload. They are written to a temporary file
(``.tmp-<pid>-<random>``) and renamed into place, so concurrent writers (``--jobs``) never
expose a half-written entry; temporary files left by killed runs (older than an hour, their
process gone) are removed when a cache is opened.

On reading, an entry whose file does not parse, whose key, format, checksum or shapes do not
match, whose values are not finite, non-negative and descending, or whose *metadata* does not
fit this run (its policy, its dtype, a route this policy cannot take: an entry saying float32
is never used by a float64 run, and a ``method`` string that is not one of the routes is never
reported) is counted as ``corrupt``, ignored and rewritten: a cache entry is used only when it
is exactly what this run would have stored for that key.

Storing never fails a run: a file or folder in the way of an entry, a full disk (ENOSPC), a
read-only folder or any other ``OSError`` or ``SafetensorError`` skips that entry and records a
one-line warning (``stats.warnings``, listed under ``options.cache.warnings`` in the report).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from specbound.errors import InputError
from specbound.spectra.spectrum import LinkNorms, MatrixSpectrum
from specbound.weights.canonical import LayerWeights
from specbound.writing import pid_alive

if TYPE_CHECKING:
    from specbound.spectra.blocks import Block
    from specbound.spectra.compute import SpectraPolicy

#: Version of the entry layout and of the computation behind it; bump it to invalidate entries.
#: 2: the policy in the key and the metadata, Gram matrices in float64 for every working dtype,
#: the value path's ``‖·‖_F`` (not its square), scaled norms.
CACHE_FORMAT = 2

#: Temporary files older than this (seconds) whose process is gone are removed on opening a cache.
STALE_TMP_S = 3600.0

#: The routes a block's ``method`` may name (``spectrum.method``), per kind.
FF_ROUTES = {"auto": ("gram", "svd", "svd (full matrix)"), "gram": ("gram",), "svd": ("svd",)}


def tensor_digest(t: torch.Tensor) -> str:
    """BLAKE2b (32 bytes) of ``t``'s dtype, shape and raw bytes in row-major order."""
    h = hashlib.blake2b(digest_size=32)
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy().data)
    return h.hexdigest()


def _payload_checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=32)
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensor_digest(tensors[k]).encode())
    return h.hexdigest()


@dataclass
class CacheStats:
    """Counts of one run: block entries found, computed (``misses``), found corrupt, written."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0
    corrupt_files: list[str] = field(default_factory=list)
    #: one line per entry that could not be stored (the run went on without it)
    warnings: list[str] = field(default_factory=list)
    #: stale temporary files of killed runs removed on opening
    removed_tmp: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt, "writes": self.writes}
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d


class SpectraCache:
    """Spectra on disk under ``root``, keyed by content (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"{self.root}: the cache path exists and is not a folder; choose another --cache.")
        try:
            (self.root / f"v{CACHE_FORMAT}").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.root}: cannot create the cache folder ({e.strerror}).") from None
        self.stats = CacheStats()
        self.stats.removed_tmp = self.remove_stale_tmp()

    def remove_stale_tmp(self, max_age_s: float = STALE_TMP_S) -> int:
        """Remove the temporary files of killed runs: ``.tmp-<pid>-*`` older than ``max_age_s``
        whose process no longer exists (a name without a pid: by age alone). Returns the count."""
        now, removed = time.time(), 0
        try:
            candidates = list(self.root.glob("v*/*/.tmp-*"))
        except OSError:
            return 0
        for p in candidates:
            try:
                if not p.is_file() or now - p.stat().st_mtime <= max_age_s or pid_alive(_tmp_pid(p.name)):
                    continue
                p.unlink()
                removed += 1
            except OSError:
                continue
        return removed

    # -- keys ------------------------------------------------------------------------------
    @staticmethod
    def key(block: str, digests: list[str], options: dict[str, Any]) -> str:
        """The entry key of one block: hash of format, block, options and tensor digests."""
        doc = json.dumps({"format": CACHE_FORMAT, "block": block, "options": options, "tensors": digests},
                         sort_keys=True)
        return hashlib.blake2b(doc.encode(), digest_size=32).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"v{CACHE_FORMAT}" / key[:2] / f"{key}.safetensors"

    # -- entries ---------------------------------------------------------------------------
    def load(self, key: str, block: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """``(tensors, meta)`` of a valid entry, ``None`` when absent or corrupt (counted)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                md = f.metadata() or {}
                tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
            meta = json.loads(md["meta"])
            ok = (
                md.get("format") == str(CACHE_FORMAT)
                and md.get("key") == key
                and md.get("block") == block
                and md.get("checksum") == _payload_checksum(tensors)
            )
        except Exception:  # unreadable, truncated, bad JSON, missing metadata
            ok = False
        if not ok:
            self._corrupt(p)
            return None
        return tensors, meta

    def store(self, key: str, block: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bool:
        """Write an entry atomically (temporary file + rename); ``False`` (and a warning in
        ``stats.warnings``) when it cannot be stored: the run goes on without it."""
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        p = self.path(key)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        md = {
            "format": str(CACHE_FORMAT), "key": key, "block": block,
            "checksum": _payload_checksum(tensors), "meta": json.dumps(meta),
        }
        tmp = p.parent / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                save_file(tensors, str(tmp), metadata=md)
                os.replace(tmp, p)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
        except (OSError, SafetensorError) as e:
            why = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
            self.stats.warnings.append(f"{p}: cache entry not stored ({why}); the run went on without it.")
            return False
        self.stats.writes += 1
        return True

    # -- blocks ----------------------------------------------------------------------------
    @staticmethod
    def policy_doc(block: "Block", policy: "SpectraPolicy", lw: LayerWeights) -> dict[str, Any]:
        """The policy an entry of ``block`` depends on (in its key and its metadata)."""
        from specbound.spectra.kernels import GRAM_DTYPE, GRAM_TOLERANCE

        opts: dict[str, Any] = {"dtype": policy.dtype_name, "dense": policy.dense,
                                "gram_dtype": str(GRAM_DTYPE).removeprefix("torch.")}
        if block.kind in ("QK", "OV", "VO"):
            opts.update(H=lw.W_Q.shape[0], H_kv=lw.W_K.shape[0])
        else:
            opts.update(ff_method=policy.ff_method, gram_tolerance=GRAM_TOLERANCE.get(policy.torch_dtype, 1e-3),
                        approx=None if policy.approx is None or policy.dense else policy.approx.to_dict())
        return opts

    def block_key(self, block: "Block", policy: "SpectraPolicy", lw: LayerWeights) -> str:
        """The key of one block of layer ``lw``: its tensors' content and the policy that changes its
        result (:meth:`policy_doc`; module docstring)."""
        return self.key(block.name, [tensor_digest(t) for t in block.tensors], self.policy_doc(block, policy, lw))

    @staticmethod
    def routes(block: "Block", policy: "SpectraPolicy") -> tuple[str, ...]:
        """The ``method`` strings this policy can give the block's spectra."""
        if block.kind in ("QK", "OV", "VO"):
            return ("dense",) if policy.dense else ("factored",)
        if policy.dense:
            return ("svd",)
        if policy.approx is not None:
            return ("slq", "gram", "svd")
        return FF_ROUTES.get(policy.ff_method, ())

    def _fits(self, block: "Block", policy: "SpectraPolicy", lw: LayerWeights, meta: dict[str, Any]) -> bool:
        """The stored metadata is what this run would have written (policy, dtype, routes)."""
        if not isinstance(meta, dict) or meta.get("policy") != json.loads(json.dumps(self.policy_doc(block, policy, lw))):
            return False
        routes = self.routes(block, policy)
        if block.kind == "VO":
            return meta.get("method") in routes
        methods = meta.get("methods")
        return (meta.get("dtype") == policy.dtype_name and isinstance(methods, list)
                and all(isinstance(m, str) and m in routes for m in methods))

    def get(self, block: "Block", policy: "SpectraPolicy", lw: LayerWeights) -> list[MatrixSpectrum] | None:
        """The block's spectra when a valid entry holds them (counted as a hit), else ``None``."""
        key = self.block_key(block, policy, lw)
        entry = self.load(key, block.name)
        if entry is None:
            return None
        if not self._fits(block, policy, lw, entry[1]):
            self.invalid(key)
            return None
        if block.kind == "VO":  # a link of the layer chain: norms, not a spectrum
            try:
                link = LinkNorms.from_payload(*entry)
            except (KeyError, ValueError, TypeError):
                link = None
            if link is None:
                self.invalid(key)
                return None
            self.stats.hits += 1
            return [link]  # type: ignore[list-item]
        n, rows, cols, k = block.expected_shape(policy.dense)
        if k is None:  # feed-forward spectra may list fewer than r values
            k = int(entry[0].get("values", torch.empty(0, 0)).shape[-1])
            if k > min(rows, cols):
                k = -1
        try:
            specs = _spectra_from_payload(*entry, n, rows, cols, k)
        except Exception:  # metadata of the wrong types: as corrupt as a bad checksum
            specs = None
        if specs is None:
            self.invalid(key)
            return None
        self.stats.hits += 1
        return specs

    def put(self, block: "Block", policy: "SpectraPolicy", lw: LayerWeights, specs: list[MatrixSpectrum]) -> None:
        """Store a computed block (counted as a miss and a write)."""
        self.stats.misses += 1
        tensors, meta = specs[0].payload() if block.kind == "VO" else _spectra_to_payload(specs)
        meta = {**(meta or {}), "policy": self.policy_doc(block, policy, lw)}
        self.store(self.block_key(block, policy, lw), block.name, tensors, meta)

    def invalid(self, key: str) -> None:
        """Mark a loaded entry that failed a semantic check as corrupt (it will be rewritten)."""
        self._corrupt(self.path(key))

    def _corrupt(self, p: Path) -> None:
        self.stats.corrupt += 1
        self.stats.corrupt_files.append(str(p))


def _tmp_pid(name: str) -> int | None:
    """The pid in a temporary file's name ``.tmp-<pid>-<random>``, ``None`` when it has none."""
    parts = name.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


# -- (de)serialising spectra ---------------------------------------------------------------------


def _spectra_to_payload(specs: list[MatrixSpectrum]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One block's spectra (``H`` heads or a single FF matrix) as tensors + JSON metadata."""
    tensors = {
        "values": torch.stack([s.values.double().cpu() for s in specs]),
        "norm_21": torch.tensor([s.norm_21 for s in specs], dtype=torch.float64),
    }
    meta: dict[str, Any] = {
        "rows": specs[0].rows, "cols": specs[0].cols, "methods": [s.method for s in specs],
        "dtype": str(specs[0].values.dtype).removeprefix("torch."),
    }
    extra_t, extra_m = specs[0].payload()
    if extra_m is not None:
        tensors.update({f"approx.{k}": v for k, v in extra_t.items()})
        meta["approx"] = extra_m
    return tensors, meta


def _spectra_from_payload(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], n: int, rows: int, cols: int, k: int
) -> list[MatrixSpectrum] | None:
    """The block's spectra, or ``None`` if the entry does not fit the expected shapes/values."""
    from specbound.spectra.approx import ApproxSpectrum

    vals, n21 = tensors.get("values"), tensors.get("norm_21")
    if vals is None or n21 is None or tuple(vals.shape) != (n, k) or tuple(n21.shape) != (n,):
        return None
    if meta.get("rows") != rows or meta.get("cols") != cols or len(meta.get("methods", ())) != n:
        return None
    if not (torch.isfinite(vals).all() and torch.isfinite(n21).all() and (vals >= 0).all() and (n21 >= 0).all()):
        return None
    if k > 1 and not (vals[:, :-1] >= vals[:, 1:]).all():
        return None
    dtype = {"float64": torch.float64, "float32": torch.float32}.get(str(meta.get("dtype")))
    if dtype is None:
        return None
    vals = vals.to(dtype)
    if "approx" in meta:
        extra = {k2.removeprefix("approx."): v for k2, v in tensors.items() if k2.startswith("approx.")}
        try:
            return [ApproxSpectrum.from_payload(vals[0], rows, cols, float(n21[0]), meta["methods"][0],
                                                extra, meta["approx"])]
        except (KeyError, ValueError, TypeError):
            return None
    return [MatrixSpectrum(vals[i], rows, cols, float(n21[i]), meta["methods"][i]) for i in range(n)]
