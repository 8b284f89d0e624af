"""Benchmark: the cost of tracking bounds during training (issue 13).

In one process, on the CPU, with a small BERT classifier built from a config (default 4 layers,
N = 256, 4 heads, d_ff = 1024; sequences of 64 random tokens, batch 16, AdamW):

* **overhead**: the wall time of ``transformers.Trainer.train()`` for ``--steps`` optimizer steps
  with ``SpecboundCallback(every_n_steps=--every)`` against the same run without it. The runs
  alternate (without, with, without, with, …, ``--repeats`` pairs) so a burst of load on the
  machine hits both; the overhead is reported from the medians and from the fastest runs (noise
  only adds time), with every run listed and the load average before and after;
* **per-update cost against analyze**: the callback's own update time (``update_s``: spectra,
  bounds, tables; every layer trains, so nothing is reused) against ``specbound.analyze`` of the
  same model (medians over ``--analyze-repeats`` calls);
* **reuse with half the layers frozen**: a :class:`specbound.Tracker` updating a model whose
  first half of the encoder layers is frozen while the other half changes between updates
  (an optimizer-sized perturbation), with the in-memory reuse on and off (medians per update).

Usage: ``python bench/bench_tracking.py [--steps 200] [--every 50] [--repeats 2] [--layers 4] [--threads 1]``.
On a loaded machine two torch threads contend badly for a model this small (a step measured 7 s
instead of 0.1 s at a load average of 9 on 2 cores); ``--threads 1`` gives steadier figures.
Prints one line ``BENCH {json}`` (after the Trainer's log lines) and a short summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BOUNDS = ["spectrum_adaptive", "edelman"]


def make_model(layers: int, hidden: int, heads: int, ff: int, seq: int, seed: int = 0):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ff, max_position_embeddings=seq, type_vocab_size=1, num_labels=2)
    return BertForSequenceClassification(cfg)


class Tokens:
    """Random token sequences; the label is whether token 7 occurs in the first half."""

    def __init__(self, n: int, seq: int, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(10, 1000, (n, seq), generator=g)
        self.x[: n // 2, seq // 4] = 7
        self.y = (self.x[:, : seq // 2] == 7).any(dim=1).long()
        self.mask = torch.ones(seq, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "attention_mask": self.mask, "labels": self.y[i]}


def train_once(a: argparse.Namespace, work: Path, tracked: bool) -> tuple[float, list[float]]:
    from transformers import Trainer, TrainingArguments

    from specbound.integrations.hf import SpecboundCallback

    model = make_model(a.layers, a.hidden, a.heads, a.ff, a.seq)
    args = TrainingArguments(output_dir=str(work / "ckpt"), max_steps=a.steps, per_device_train_batch_size=a.batch,
                             learning_rate=1e-4, use_cpu=True, report_to="none", disable_tqdm=True, seed=0,
                             logging_steps=10, save_strategy="no", dataloader_num_workers=0)
    cbs = []
    if tracked:
        cbs.append(SpecboundCallback(every_n_steps=a.every, out=work / f"track-{time.monotonic_ns()}", bounds=BOUNDS,
                                     plots=False))
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(a.batch * a.steps, a.seq), callbacks=cbs)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    updates = cbs[0].tracker.frame().get("update_s", []).tolist() if tracked else []
    return wall, updates


def perturb(model, layers: list[int], seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in layers:
            for p in model.bert.encoder.layer[i].parameters():
                p.add_(1e-3 * torch.randn(p.shape, generator=g))


def reuse_figures(a: argparse.Namespace, n_updates: int = 4) -> dict:
    import specbound

    out = {}
    trained = list(range(a.layers // 2, a.layers))
    for reuse in (True, False):
        model = make_model(a.layers, a.hidden, a.heads, a.ff, a.seq)
        tr = specbound.Tracker(bounds=BOUNDS, reuse=reuse)
        tr.update(model, step=0)  # the first update computes everything either way
        times = []
        for k in range(1, n_updates + 1):
            perturb(model, trained, seed=k)
            tr.update(model, step=k)
            times.append(float(tr.frame()["update_s"].iloc[-1]))
        out["with_reuse" if reuse else "without_reuse"] = {
            "median_update_s": statistics.median(times), "update_s": times,
            "blocks_computed_per_update": float(tr.frame()["blocks_computed"].iloc[-1]),
        }
    w, wo = out["with_reuse"]["median_update_s"], out["without_reuse"]["median_update_s"]
    out["frozen_layers"] = list(range(a.layers // 2))
    out["saving"] = 1.0 - w / wo
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--analyze-repeats", type=int, default=5)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ff", type=int, default=1024)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's own); 1 is steadier on a shared machine")
    a = p.parse_args()

    import torch

    if a.threads is not None:
        torch.set_num_threads(a.threads)

    import specbound

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_once(argparse.Namespace(**{**vars(a), "steps": 5, "every": 5}), work, tracked=True)  # warm-up
        plain, tracked, per_run = [], [], []
        for _ in range(a.repeats):
            plain.append(train_once(a, work, tracked=False)[0])
            wall, ups = train_once(a, work, tracked=True)
            tracked.append(wall)
            per_run.append(ups)
    updates = [u for ups in per_run for u in ups]

    model = make_model(a.layers, a.hidden, a.heads, a.ff, a.seq)
    specbound.analyze(model, bounds=BOUNDS)
    analyze_s = []
    for _ in range(a.analyze_repeats):
        t0 = time.perf_counter()
        specbound.analyze(model, bounds=BOUNDS)
        analyze_s.append(time.perf_counter() - t0)
    reuse = reuse_figures(a)
    load_after = os.getloadavg()

    med_plain, med_tracked = statistics.median(plain), statistics.median(tracked)
    doc = {
        "model": {"layers": a.layers, "N": a.hidden, "heads": a.heads, "d_ff": a.ff, "seq": a.seq, "batch": a.batch},
        "steps": a.steps, "every_n_steps": a.every, "bounds": BOUNDS, "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_before": load_before, "load_after": load_after,
        "train_s_without": plain, "train_s_with": tracked,
        "overhead_median": med_tracked / med_plain - 1.0,
        "overhead_fastest": min(tracked) / min(plain) - 1.0,
        # robust to load: the time the updates themselves took, over the rest of the tracked run
        "overhead_accounted": statistics.median(sum(u) / (w - sum(u)) for w, u in zip(tracked, per_run)),
        "updates_per_run": a.steps // a.every,
        "update_s": updates, "median_update_s": statistics.median(updates),
        "analyze_s": analyze_s, "median_analyze_s": statistics.median(analyze_s),
        "update_over_analyze": statistics.median(updates) / statistics.median(analyze_s),
        "reuse_half_frozen": reuse,
    }
    print("BENCH " + json.dumps(doc))  # one line, after the Trainer's own log lines
    print(
        f"overhead {100 * doc['overhead_median']:.1f}% (medians) / {100 * doc['overhead_fastest']:.1f}% (fastest) / "
        f"{100 * doc['overhead_accounted']:.1f}% (update time over the rest of the run); "
        f"update {doc['median_update_s']:.3f} s vs analyze {doc['median_analyze_s']:.3f} s; "
        f"reuse with half the layers frozen saves {100 * reuse['saving']:.0f}% per update; "
        f"load {load_before[0]:.1f} -> {load_after[0]:.1f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
