"""``SpecboundCallback``: a ``transformers.TrainerCallback`` recording bounds while a Trainer trains.

>>> from specbound.integrations.hf import SpecboundCallback                        # doctest: +SKIP
>>> trainer = Trainer(model=model, args=args, train_dataset=ds,                     # doctest: +SKIP
...                   callbacks=[SpecboundCallback(every_n_steps=200, out="runs/specbound",
...                                                bounds=["spectrum_adaptive", "edelman"])])
>>> trainer.train()                                                                # doctest: +SKIP

At every step with ``global_step % every_n_steps == 0`` (``on_step_end``, after the optimizer
step) the callback runs a :class:`~specbound.integrations.tracker.Tracker` update on the live
model, on the world process zero only (``state.is_world_process_zero``). It asks the Trainer to
log at that step (``control.should_log``), and when the Trainer logs (``on_log``) it adds the
``specbound/…`` scalars to the log entry, so they land in ``trainer.state.log_history`` (and so in
the checkpoints' ``trainer_state.json``), and takes the Trainer's loss, learning rate and, after an
evaluation at that step, ``eval_*`` metrics into the row of ``track.csv``.

The logs dict reaches the Trainer's reporting callbacks (TensorBoard, W&B, …) in callback order.
Those the Trainer adds itself come before user callbacks; :meth:`SpecboundCallback.attach`
places the callback before them, so they receive the scalars too.

Resume: at ``on_train_begin`` the tables are rewound to the Trainer's starting step (the
checkpoint's ``global_step``; 0 for a fresh run), so a resumed run appends without duplicating
steps. At ``on_train_end`` the plots are written (``plots=False`` turns that off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specbound.errors import InputError
from specbound.integrations.tracker import Tracker, check_every_n_steps

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - transformers is the optional extra specbound[hf]
    raise InputError(
        "specbound.integrations.hf needs transformers: pip install 'specbound[hf]'."
    ) from None

__all__ = ["SpecboundCallback"]


class SpecboundCallback(TrainerCallback):
    """Bounds during ``transformers.Trainer`` training (module docstring).

    ``every_n_steps``: the update period in optimizer steps (≥ 1). ``out``: the tracking folder
    (``track.csv``, ``track_layers.csv``, plots). ``plots``: write the plots at the end of training.
    ``log``: hand the scalars to the Trainer's log. Every other keyword goes to
    :class:`~specbound.integrations.tracker.Tracker` (``bounds``, ``dtype``, ``device``,
    ``ff_method``, ``l_phi``, ``grid_m``, ``seq_len``, ``reuse``, …), checked here.
    """

    def __init__(self, every_n_steps: int = 500, out: str | Path = "specbound-track", *, plots: bool = True,
                 log: bool = True, **tracker_options: Any) -> None:
        self.every_n_steps = check_every_n_steps(every_n_steps)
        tracker_options.setdefault("enabled", True)  # the Trainer says which process is zero
        self.tracker = Tracker(out, **tracker_options)
        self.plots, self.log = bool(plots), bool(log)
        self._pending: dict[int, dict[str, float]] = {}

    def attach(self, trainer: Any) -> "SpecboundCallback":
        """Add this callback to ``trainer`` ahead of its reporting callbacks (right after its flow
        callback), so TensorBoard, W&B, … receive the scalars in the same log call."""
        handler = trainer.callback_handler
        if self in handler.callbacks:
            handler.callbacks.remove(self)
        handler.callbacks.insert(min(1, len(handler.callbacks)), self)
        return self

    # -- events ---------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.tracker.rewind(int(state.global_step))
        self._pending.clear()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = int(state.global_step)
        if not state.is_world_process_zero or step % self.every_n_steps or step in self._pending:
            return None
        model = kwargs.get("model")
        if model is None:  # pragma: no cover - every Trainer passes its model
            raise InputError("SpecboundCallback: the Trainer passed no model to on_step_end.")
        scalars = self.tracker.update(model, step=step, epoch=state.epoch, metrics=_latest(state.log_history))
        self._pending[step] = scalars
        if self.log:
            control.should_log = True  # the Trainer logs (loss, our scalars) at this step
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if not state.is_world_process_zero or logs is None:
            return
        step = int(state.global_step)
        if step in self.tracker.steps:
            self.tracker.set_metrics(step, {k: v for k, v in logs.items() if not k.startswith("specbound/")})
        scalars = self._pending.pop(step, None)
        if scalars and self.log:
            logs.update(scalars)  # the callbacks after this one (and attach()'s reporters) see them
            last = state.log_history[-1] if state.log_history else None
            if last is not None and last.get("step") == step:
                last.update(scalars)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.tracker.close(plots=self.plots)


def _latest(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The latest value of every metric the Trainer logged (``loss``, ``eval_loss``, …)."""
    out: dict[str, float] = {}
    for entry in log_history:
        for k, v in entry.items():
            if k not in ("step", "epoch") and not k.startswith("specbound/") and isinstance(v, (int, float)):
                out[k] = v
    return out
