"""The ``tensors`` column: every row of the per-matrix table names stored tensors of the
checkpoint, and the slices it names re-form the row's matrix (same σ_1)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from specbound.measures import PRODUCT_SEPARATOR
from specbound.weights.canonical import NAME_SEPARATOR
from specbound.weights.sources import open_source

_SLICE = re.compile(r"^(?P<name>[^\[]+)(?:\[(?P<cols>:, *)?(?P<a>\d+):(?P<b>\d+)\])?$")


def _factor(src, label: str, output: bool) -> torch.Tensor:
    """One factor in row-vector orientation: Q/K/V ``[N, d_h]``, O ``[d_h, N]``."""
    m = _SLICE.match(label.strip())
    assert m is not None, label
    t = src.get(m["name"]).double()
    a, b = int(m["a"]), int(m["b"])
    if m["cols"]:
        t = t[:, a:b]
        return t.T if output else t
    t = t[a:b]
    return t if output else t.T


def _sigma1_product(a: torch.Tensor, b: torch.Tensor) -> float:
    """σ_1 of ``a @ b`` for thin factors (``a`` ``[N, k]``, ``b`` ``[k, N]``) through their QR."""
    r1 = torch.linalg.qr(a).R
    r2 = torch.linalg.qr(b.T).R
    return float(torch.linalg.svdvals(r1 @ r2.T)[0])


def _sigma1(x: torch.Tensor) -> float:
    g = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    return float(torch.linalg.eigvalsh(g)[-1].sqrt())


class _Memo:
    """Each stored tensor read once, in float64."""

    def __init__(self, src) -> None:
        self.src, self.seen = src, {}

    def get(self, name: str) -> torch.Tensor:
        if name not in self.seen:
            self.seen[name] = self.src.get(name).double()
        return self.seen[name]


def check_tensors(report, folder: Path, layers: set[int] | None = None) -> None:
    """Every row's names are tensors of the checkpoint; the matrices of ``layers`` (default
    all) are re-formed from the named slices and their σ_1 compared."""
    opened = open_source(folder)
    keys = set(opened.keys())
    src = _Memo(opened)
    rows = report.matrices
    assert "tensors" in rows.columns
    for r in rows.itertuples():
        assert r.tensors, (r.layer, r.head, r.kind)
        names = [re.sub(r"\[[^\]]*\]$", "", n.strip())
                 for part in r.tensors.split(PRODUCT_SEPARATOR) for n in part.split(NAME_SEPARATOR)]
        missing = [n for n in names if n not in keys]
        assert not missing, (r.tensors, missing)
        if layers is not None and r.layer not in layers:
            continue
        if r.kind in ("QK", "OV"):
            left, right = r.tensors.split(PRODUCT_SEPARATOR)
            a = _factor(src, left, False)
            b = _factor(src, right, False).T if r.kind == "QK" else _factor(src, right, True)
            s1 = _sigma1_product(a, b)
        else:
            s1 = _sigma1(torch.cat([src.get(n.strip()).double() for n in r.tensors.split(NAME_SEPARATOR)], dim=0))
        assert s1 == pytest.approx(float(r.spectral_norm), rel=1e-8), r.tensors


def test_minilm_rows_name_their_tensors(minilm_report, minilm_path) -> None:
    m = minilm_report.matrices
    row = m[(m["layer"] == 0) & (m["head"] == 0) & (m["kind"] == "QK")].iloc[0]
    assert row["tensors"] == ("encoder.layer.0.attention.self.query.weight[0:32]" + PRODUCT_SEPARATOR
                              + "encoder.layer.0.attention.self.key.weight[0:32]")
    check_tensors(minilm_report, minilm_path, layers={0, 5})  # σ_1 re-formed for the first and last layer


@pytest.fixture(scope="module")
def saved_family(tmp_path_factory):
    from builders import build

    def get(family: str) -> Path:
        folder = tmp_path_factory.mktemp(family)
        build(family).save_pretrained(folder)
        return folder

    return get


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_other_layouts_name_their_tensors(saved_family, family: str) -> None:
    """GPT-2's fused Conv1D c_attn (column slices with offsets) and Llama's GQA (K/V head g(h))."""
    import specbound

    folder = saved_family(family)
    check_tensors(specbound.analyze(folder, bounds="param_count"), folder)


def test_custom_mapping_names_its_tensors(saved_family, tmp_path: Path) -> None:
    """A custom mapping gives the adapter's labels; the conv1d layout slices columns."""
    from safetensors.torch import save_file

    import specbound
    from builders import H, L, N

    folder = saved_family("bert")
    mapping = {"L": L, "N": N, "H": H, **{k: f"encoder.layer.{{i}}.{v}.weight" for k, v in {
        "Q": "attention.self.query", "K": "attention.self.key", "V": "attention.self.value",
        "O": "attention.output.dense", "M_in": "intermediate.dense", "M_out": "output.dense"}.items()}}
    linear = specbound.analyze(folder, mapping=mapping, bounds="param_count")
    adapter = specbound.analyze(folder, bounds="param_count")
    assert linear.matrices["tensors"].tolist() == adapter.matrices["tensors"].tolist()
    check_tensors(linear, folder)
    src = open_source(folder)
    conv = {k: (src.get(k).T.contiguous() if len(src.shape(k)) == 2 and ".layer." in k else src.get(k))
            for k in src.keys()}
    save_file(conv, str(tmp_path / "conv.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    rep = specbound.analyze(tmp_path / "conv.safetensors", mapping={**mapping, "layout": "conv1d"},
                            bounds="param_count")
    assert np.allclose(rep.matrices["spectral_norm"], adapter.matrices["spectral_norm"])
    assert "[:, 0:" in rep.matrices["tensors"].iloc[0]
    check_tensors(rep, tmp_path / "conv.safetensors")
