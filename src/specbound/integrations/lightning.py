"""``SpecboundLightningCallback``: bounds while a Lightning ``Trainer`` trains (optional extra
``specbound[lightning]``).

>>> from specbound.integrations.lightning import SpecboundLightningCallback   # doctest: +SKIP
>>> trainer = lightning.pytorch.Trainer(max_epochs=2, callbacks=[           # doctest: +SKIP
...     SpecboundLightningCallback(every_n_steps=50, out="runs/x", bounds=["spectrum_adaptive"])])

After every optimizer step with ``trainer.global_step % every_n_steps == 0``
(``on_train_batch_end``; once per step under gradient accumulation) it runs a
:class:`~specbound.integrations.tracker.Tracker` update on the LightningModule, on global rank
zero only, with the trainer's ``callback_metrics`` as the row's metrics, and hands the
``specbound/…`` scalars to every logger of the trainer (``trainer.loggers``: TensorBoard, W&B,
CSV, … whatever the user configured), at the step Lightning logs that batch's own metrics at.
Not through ``pl_module.log``: a value logged from a callback at some steps only stays in the
epoch's results and is sent again at every later step of the epoch (Lightning 2.6), so a logger
would show stale values between updates.
At ``on_train_start`` the tables are rewound to the starting ``global_step`` (resume from a
checkpoint appends without duplicating steps); at ``on_train_end`` the plots are written.

Lightning is imported when the class is first used, not with this module; without it, using
the class is an :class:`~specbound.InputError` naming the extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specbound.errors import InputError
from specbound.integrations.tracker import Tracker, check_every_n_steps

__all__ = ["SpecboundLightningCallback"]

_CLASS: type | None = None


def _lightning_callback_base() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        raise InputError(
            "SpecboundLightningCallback needs Lightning (lightning.pytorch), which is not installed: "
            "pip install 'specbound[lightning]'."
        ) from None
    return Callback


def _build() -> type:
    base = _lightning_callback_base()

    class SpecboundLightningCallback(base):  # type: ignore[misc, valid-type]
        """Bounds during Lightning training (module docstring).

        ``every_n_steps``: update period in optimizer steps (≥ 1). ``out``: tracking folder.
        ``plots``: write the plots at the end of training. ``log``: hand the scalars to the
        trainer's loggers. Other keywords go to :class:`~specbound.integrations.tracker.Tracker`.
        """

        def __init__(self, every_n_steps: int = 500, out: str | Path = "specbound-track", *, plots: bool = True,
                     log: bool = True, **tracker_options: Any) -> None:
            super().__init__()
            self.every_n_steps = check_every_n_steps(every_n_steps)
            tracker_options.setdefault("enabled", True)  # the trainer says which rank is zero
            self.tracker = Tracker(out, **tracker_options)
            self.plots, self.log = bool(plots), bool(log)
            self._last_step = -1

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero:
                self.tracker.rewind(int(trainer.global_step))
            self._last_step = int(trainer.global_step)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            step = int(trainer.global_step)
            if step == self._last_step or step % self.every_n_steps or not trainer.is_global_zero:
                return
            self._last_step = step
            n_batches = trainer.num_training_batches
            epoch = float(trainer.current_epoch)
            if isinstance(n_batches, (int, float)) and 0 < n_batches < float("inf"):
                epoch += (batch_idx + 1) / n_batches
            metrics = {k: v for k, v in trainer.callback_metrics.items() if not str(k).startswith("specbound/")}
            scalars = self.tracker.update(pl_module, step=step, epoch=epoch, metrics=metrics)
            if self.log and scalars:
                # straight to the loggers, as Lightning's LearningRateMonitor does, at the step
                # Lightning gives this batch's own metrics: values put into pl_module.log from a
                # callback stay in the epoch's results and are re-sent at every later step
                at = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_batches_that_stepped", step)
                for logger in trainer.loggers:
                    logger.log_metrics(scalars, step=int(at))

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero:
                self.tracker.close(plots=self.plots)

    SpecboundLightningCallback.__module__ = __name__
    SpecboundLightningCallback.__qualname__ = "SpecboundLightningCallback"
    return SpecboundLightningCallback


def __getattr__(name: str) -> Any:
    global _CLASS
    if name == "SpecboundLightningCallback":
        if _CLASS is None:
            _CLASS = _build()
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
