"""A content-addressed cache of spectra: ``get`` / ``put`` around the spectra loop.

A layer's spectra are computed in independent *blocks* (``spectra/blocks.py``): ``qk`` (every
head's QK from ``W_Q``, ``W_K``), ``ov`` (``W_V``, ``W_O``), ``m_in``, ``m_out``, and the
value-path link ``vo`` (σ_1, ‖·‖_F², ‖·‖_{2,1} of ``W_V W_O``). Each block's cache key is a
BLAKE2b hash of

* the cache-format version :data:`CACHE_FORMAT`;
* the block name and the options that change its result: the working dtype and the ``dense``
  flag for every block; for ``m_in`` / ``m_out`` also the feed-forward method and the
  approximate-mode settings (QK/OV are exact in approximate mode too, so they share entries);
* the content hash of every tensor the block comes from: BLAKE2b over dtype, shape and the raw
  bytes of the canonical matrix as read from the checkpoint (before the upcast).

So a second run with other bound parameters (L_φ, grid, families) reads and hashes the weights
but does no linear algebra, and a fine-tuned model recomputes only the blocks whose tensors
changed (a LoRA on ``q_proj``/``v_proj`` recomputes QK and OV, not the feed-forward spectra).
The device is not in the key: CUDA and CPU results agree within the tolerance of README,
"Scale".

Entries are safetensors files ``DIR/v{CACHE_FORMAT}/<key[:2]>/<key>.safetensors`` holding the
spectra as tensors and, in the metadata, the key, the block, the matrix sizes and a BLAKE2b
checksum of the payload. They are written to a temporary file and renamed into place, so
concurrent writers (``--jobs``) never expose a half-written entry. On reading, an entry whose
file does not parse, whose key, format, checksum or shapes do not match, or whose values are not
finite, non-negative and descending is counted as ``corrupt``, ignored and rewritten: a cache
entry is used only when it is exactly what was stored for that key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from specbound.errors import InputError
from specbound.spectra.spectrum import LinkNorms, MatrixSpectrum
from specbound.weights.canonical import LayerWeights

if TYPE_CHECKING:
    from specbound.spectra.blocks import Block
    from specbound.spectra.compute import SpectraPolicy

#: Version of the entry layout and of the computation behind it; bump it to invalidate entries.
CACHE_FORMAT = 1



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

    def to_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt, "writes": self.writes}


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

    def store(self, key: str, block: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Write an entry atomically (temporary file + rename)."""
        from safetensors.torch import save_file

        p = self.path(key)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        md = {
            "format": str(CACHE_FORMAT), "key": key, "block": block,
            "checksum": _payload_checksum(tensors), "meta": json.dumps(meta),
        }
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=p.parent)
            os.close(fd)
            try:
                save_file(tensors, tmp, metadata=md)
                os.replace(tmp, p)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as e:
            raise InputError(f"{p}: cannot write the cache entry ({e.strerror}).") from None
        self.stats.writes += 1

    # -- blocks ----------------------------------------------------------------------------
    def block_key(self, block: "Block", policy: "SpectraPolicy", lw: LayerWeights) -> str:
        """The key of one block of layer ``lw``: its tensors' content and the options that change
        its result (module docstring; the same keys as every earlier version of format 1)."""
        opts: dict[str, Any] = {"dtype": policy.dtype_name, "dense": policy.dense}
        if block.kind in ("QK", "OV", "VO"):
            opts.update(H=lw.W_Q.shape[0], H_kv=lw.W_K.shape[0])
        else:
            opts.update(ff_method=policy.ff_method,
                        approx=None if policy.approx is None or policy.dense else policy.approx.to_dict())
        return self.key(block.name, [tensor_digest(t) for t in block.tensors], opts)

    def get(self, block: "Block", policy: "SpectraPolicy", lw: LayerWeights) -> list[MatrixSpectrum] | None:
        """The block's spectra when a valid entry holds them (counted as a hit), else ``None``."""
        key = self.block_key(block, policy, lw)
        entry = self.load(key, block.name)
        if entry is None:
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
        payload = specs[0].payload() if block.kind == "VO" else _spectra_to_payload(specs)
        self.store(self.block_key(block, policy, lw), block.name, *payload)  # type: ignore[arg-type]

    def invalid(self, key: str) -> None:
        """Mark a loaded entry that failed a semantic check as corrupt (it will be rewritten)."""
        self._corrupt(self.path(key))

    def _corrupt(self, p: Path) -> None:
        self.stats.corrupt += 1
        self.stats.corrupt_files.append(str(p))


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
