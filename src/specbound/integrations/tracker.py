"""The plain :class:`Tracker`: bounds of a model while it trains, in any training loop.

>>> tracker = specbound.Tracker(out="runs/x", bounds=["spectrum_adaptive", "edelman"])  # doctest: +SKIP
>>> tracker.update(model, step=200, metrics={"train_loss": 0.41})                       # doctest: +SKIP
>>> tracker.close()                                                                     # doctest: +SKIP

Each :meth:`Tracker.update` runs the public pipeline, ``analyze(model, ...)``, on the live module
(its ``state_dict`` tensors are read in place: no copy, nothing written to disk), with a
:class:`~specbound.integrations.memory.MemorySpectraCache` so blocks whose tensors did not change
since the previous update (frozen layers) are not recomputed. What a row holds:
:mod:`specbound.integrations.records`. The Hugging Face and Lightning callbacks are thin
wrappers around a Tracker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specbound.errors import InputError
from specbound.integrations.memory import MemorySpectraCache
from specbound.integrations.records import (
    LAYER_COLUMNS, LAYERS_FILE, OWN_PREFIXES, TRACK_FILE, layer_rows, read_table, scalars_of, summary_row,
    track_columns, write_table,
)

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from specbound.report.schema import Report

__all__ = ["Tracker", "check_every_n_steps", "is_main_process", "resolve_module"]


def check_every_n_steps(every_n_steps: Any) -> int:
    """``every_n_steps`` as a positive integer, else :class:`InputError`."""
    if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps <= 0:
        raise InputError(f"every_n_steps must be a positive integer, got {every_n_steps!r}.")
    return every_n_steps


def is_main_process() -> bool:
    """``False`` only on a non-zero rank of an initialised ``torch.distributed`` process group."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _check_bounds(bounds: Sequence[str] | str | None, seq_len: int | None) -> list[str] | None:
    from specbound.bounds import available_bounds, needs_of

    if bounds is None or bounds == "all":
        return None
    names = [b.strip() for b in bounds.split(",")] if isinstance(bounds, str) else list(bounds)
    reg = available_bounds()
    unknown = [n for n in names if n not in reg]
    if unknown or not names:
        raise InputError(f"unknown bound(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"available: {', '.join(reg)}.")
    for n in names:
        needs = needs_of(reg[n])
        if "seq_len" in needs and seq_len is None:
            raise InputError(f"bound {n!r} needs the sequence length: pass seq_len=T.")
        if "init" in needs:
            raise InputError(f"bound {n!r} needs a reference checkpoint (init), which tracking does not take.")
    return names


def _model_device(model: Any) -> "torch.device":
    import torch

    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _unwrap(model: Any) -> Any:
    """The module inside a DDP/FSDP/DataParallel wrapper (``.module``), else ``model``."""
    while type(model).__name__ in _WRAPPERS and getattr(model, "module", None) is not None:
        model = model.module
    return model


def _has_config(module: Any) -> bool:
    cfg = getattr(module, "config", None)
    return cfg is not None and hasattr(cfg, "to_dict") and hasattr(cfg, "model_type")


def resolve_module(model: Any, submodule: str | None, explicit_config: bool) -> Any:
    """The module to analyse: ``model.<submodule>`` when given (a dotted attribute path); else
    ``model`` itself when it carries a ``transformers`` config (or a config/mapping was given);
    else its first submodule that carries one (a LightningModule wrapping a HF model)."""
    model = _unwrap(model)
    if submodule is not None:
        target = model
        for part in submodule.split("."):
            if not hasattr(target, part):
                raise InputError(f"submodule {submodule!r}: {type(model).__name__} has no attribute path {submodule}.")
            target = getattr(target, part)
        return _unwrap(target)
    if explicit_config or _has_config(model) or not hasattr(model, "named_modules"):
        return model
    for _, sub in model.named_modules():
        if _has_config(sub):
            return sub
    return model


def _metric_values(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The numeric entries of ``metrics`` as floats (tensors of one element included)."""
    out: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        if k in ("step", "epoch") or isinstance(v, bool):
            continue
        if hasattr(v, "numel") and hasattr(v, "item"):
            if v.numel() != 1:
                continue
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


class Tracker:
    """Bound values, adaptivity figures and per-layer spectra of a model at chosen steps.

    ``out``: folder of ``track.csv`` and ``track_layers.csv`` (rewritten atomically after every
    update; existing tables there are continued, see :meth:`rewind`), ``None`` to keep the rows
    in memory only. ``bounds``: family names (a list or a comma-separated string), ``None`` or
    ``"all"`` for every family that applies. ``l_phi``, ``grid_m``, ``seq_len``, ``dtype``,
    ``ff_method``, ``dense``, ``config``, ``mapping``: as in :func:`specbound.analyze`.
    ``submodule``: the attribute path of the Transformer inside ``model`` (``"net"``); by default
    ``model`` itself, or its first submodule carrying a ``transformers`` config (a LightningModule
    holding a HF model), inside any DDP/FSDP wrapper. ``device``: where the spectra are computed; ``None`` (default) is the model's own device, so a
    CUDA run stays on the GPU. ``reuse``: keep spectra in memory between updates and recompute
    only the blocks whose tensors changed. ``enabled``: ``None`` means "only on the main process"
    (rank 0 of ``torch.distributed``, or a single process); a disabled tracker records nothing.
    Every argument is checked here, before training starts (:class:`~specbound.InputError`).
    """

    def __init__(
        self,
        out: str | Path | None = None,
        *,
        bounds: Sequence[str] | str | None = None,
        l_phi: float | None = None,
        grid_m: int | None = None,
        seq_len: int | None = None,
        dtype: str = "float64",
        device: "str | torch.device | None" = None,
        ff_method: str = "auto",
        dense: bool = False,
        config: Any = None,
        mapping: Any = None,
        submodule: str | None = None,
        reuse: bool = True,
        enabled: bool | None = None,
    ) -> None:
        from specbound.analysis import check_options
        from specbound.spectra.compute import SpectraPolicy

        check_options(l_phi=l_phi, grid_m=grid_m, seq_len=seq_len)
        self.bounds = _check_bounds(bounds, seq_len)
        SpectraPolicy.of(dtype=dtype, device=device if device is not None else "cpu", ff_method=ff_method,
                         dense=dense)  # every spectra option checked now
        self._spectra_options = {"dtype": dtype, "ff_method": ff_method, "dense": bool(dense)}
        self.device = device
        self.l_phi, self.grid_m, self.seq_len = l_phi, grid_m, seq_len
        self.config, self.mapping = config, mapping
        if submodule is not None and not (isinstance(submodule, str) and submodule):
            raise InputError(f"submodule must be a dotted attribute name (e.g. 'net'), got {submodule!r}.")
        self.submodule = submodule
        self.enabled = is_main_process() if enabled is None else bool(enabled)
        self.store: MemorySpectraCache | None = MemorySpectraCache() if reuse else None
        self.out = None if out is None else Path(out).expanduser()
        self.last_report: Report | None = None
        self.last_scalars: dict[str, float] = {}
        self._rows: list[dict[str, Any]] = []
        self._layers: list[dict[str, Any]] = []
        if self.out is not None:
            if self.out.exists() and not self.out.is_dir():
                raise InputError(f"{self.out}: the tracking output exists and is not a folder; choose another out.")
            if self.enabled:
                try:
                    self.out.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise InputError(f"{self.out}: cannot create the tracking folder ({e.strerror}).") from None
                self._load()

    # -- the tables ---------------------------------------------------------------------------
    def _load(self) -> None:
        assert self.out is not None
        track, layers = read_table(self.out / TRACK_FILE), read_table(self.out / LAYERS_FILE)
        if track is not None:
            self._rows = [{k: v for k, v in r.items() if not _is_nan(v) or k in ("step", "epoch")}
                          for r in track.to_dict("records")]
        if layers is not None:
            self._layers = layers.to_dict("records")

    def _write(self) -> None:
        if self.out is None or not self.enabled:
            return
        write_table(self._rows, self.out / TRACK_FILE, columns=track_columns(self._rows))
        write_table(self._layers, self.out / LAYERS_FILE, columns=LAYER_COLUMNS)

    @property
    def steps(self) -> list[int]:
        """The steps recorded, in order."""
        return [int(r["step"]) for r in self._rows]

    def frame(self) -> "pd.DataFrame":
        """``track.csv`` as a DataFrame (one row per update)."""
        import pandas as pd

        return pd.DataFrame(self._rows, columns=track_columns(self._rows))

    def layers_frame(self) -> "pd.DataFrame":
        """``track_layers.csv`` as a DataFrame (one row per update, layer and kind)."""
        import pandas as pd

        return pd.DataFrame(self._layers, columns=LAYER_COLUMNS)

    def rewind(self, step: int) -> None:
        """Drop the rows after ``step``: a run resumed from its checkpoint at ``step`` redoes the
        steps after it, so the table continues from there with one row per step."""
        if not self.enabled:
            return
        n = len(self._rows)
        self._rows = [r for r in self._rows if int(r["step"]) <= step]
        self._layers = [r for r in self._layers if int(r["step"]) <= step]
        if len(self._rows) != n:
            self._write()

    # -- updates ------------------------------------------------------------------------------
    def analyze(self, model: Any) -> "Report":
        """``specbound.analyze`` of the live ``model`` with this tracker's options (and reuse)."""
        import torch

        from specbound.analysis import analyze
        from specbound.spectra.compute import SpectraPolicy

        device = self.device if self.device is not None else _model_device(model)
        policy = SpectraPolicy.of(device=device, **self._spectra_options)
        if self.store is not None:
            self.store.begin_update()
        with torch.no_grad():
            report = analyze(model, config=self.config, mapping=self.mapping, bounds=self.bounds, l_phi=self.l_phi,
                             grid_m=self.grid_m, seq_len=self.seq_len, policy=policy, cache=self.store)
        if self.store is not None:
            self.store.end_update()
        return report

    def update(self, model: Any, *, step: int, epoch: float | None = None,
               metrics: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Analyse ``model`` (an ``nn.Module``; see ``submodule``) at
        ``step``, record a row (replacing an earlier row of the same step) and rewrite the tables.
        ``metrics``: the trainer's latest figures (``loss``, ``eval_loss``, …; numbers or
        one-element tensors). Returns the scalars for the trainer's loggers (``specbound/…``);
        ``{}`` when the tracker is disabled."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InputError(f"step must be a non-negative integer, got {step!r}.")
        if not self.enabled:
            return {}
        t0 = time.perf_counter()
        report = self.analyze(resolve_module(model, self.submodule, self.config is not None or self.mapping is not None))
        head = {"step": step, "epoch": math.nan if epoch is None else float(epoch), **_metric_values(metrics)}
        row = {**head, **summary_row(report)}
        layers = [{"step": step, "epoch": head["epoch"], **r} for r in layer_rows(report)]
        row["update_s"] = time.perf_counter() - t0
        stats = self.store.stats if self.store is not None else None
        row["blocks_computed"] = float(stats.misses if stats is not None else 4 * report.model.n_layers)
        row["blocks_reused"] = float(stats.hits if stats is not None else 0)
        self._rows = [r for r in self._rows if int(r["step"]) != step] + [row]
        self._layers = [r for r in self._layers if int(r["step"]) != step] + layers
        self._rows.sort(key=lambda r: int(r["step"]))
        self._layers.sort(key=lambda r: int(r["step"]))
        self._write()
        self.last_report = report
        self.last_scalars = scalars_of(row, layers)
        return dict(self.last_scalars)

    def set_metrics(self, step: int, metrics: Mapping[str, Any]) -> bool:
        """Merge ``metrics`` reported after the update of ``step`` (the trainer's loss and eval
        loss of that very step) into its row; ``False`` when no row has that step."""
        values = {k: v for k, v in _metric_values(metrics).items() if not k.startswith(OWN_PREFIXES)}
        if not self.enabled or not values:
            return False
        for r in self._rows:
            if int(r["step"]) == step:
                r.update(values)
                self._write()
                return True
        return False

    # -- the end ------------------------------------------------------------------------------
    def plot(self, out: str | Path | None = None) -> list[Path]:
        """The track plots (:mod:`specbound.integrations.plots`) into ``out`` (default: the
        tracker's folder); nothing without rows."""
        from specbound.integrations.plots import write_track_plots

        folder = Path(out) if out is not None else self.out
        if folder is None:
            raise InputError("plot: the tracker has no out folder; pass one.")
        if not self.enabled or not self._rows:
            return []
        return write_track_plots(self.frame(), self.layers_frame(), folder)

    def close(self, *, plots: bool = True) -> list[Path]:
        """Write the tables a last time and, with ``plots`` and an ``out`` folder, the plots."""
        self._write()
        if plots and self.out is not None:
            return self.plot()
        return []

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(plots=exc[0] is None)


_WRAPPERS = {"DistributedDataParallel", "DataParallel", "FullyShardedDataParallel"}


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v
