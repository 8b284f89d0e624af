"""E2 growth exponents (scaling/fits.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from specbound.experiments.scaling.fits import fit_exponents


def test_fit_exponents_on_a_grid_with_known_growth() -> None:
    Ls, Ns = [2, 4, 6], [64, 128, 256]
    rows = [
        {"L": L, "N": N, "log10_a": 1.5 * math.log10(N) + 0.2 * L, "log10_b": 3.0 * math.log10(N) + 0.5 * L}
        for L in Ls
        for N in Ns
    ]
    rows.append({"L": 8, "N": 64, "log10_a": 1.5 * math.log10(64) + 1.6, "log10_b": 3.0 * math.log10(64) + 4.0})
    ex = fit_exponents(pd.DataFrame(rows), ["a", "b", "absent"])
    assert set(ex["family"]) == {"a", "b"}
    a = ex[ex["family"] == "a"]
    n_rows = a[(a["x"] == "log10_N") & (a["fixed"] == "L")]
    assert list(n_rows["fixed_value"]) == [2, 4, 6]  # L=8 has a single N: no row
    assert np.allclose(n_rows["slope"], 1.5) and (n_rows["n_points"] == 3).all()
    l_rows = a[(a["x"] == "L") & (a["fixed"] == "N")]
    assert np.allclose(l_rows["slope"], 0.2)
    assert list(l_rows["n_points"]) == [4, 3, 3]
    pooled = ex[(ex["family"] == "b") & (ex["fixed"] == "all")].set_index("x")
    assert pooled.loc["log10_N", "slope"] == pytest.approx(3.0) and pooled.loc["L", "slope"] == pytest.approx(0.5)
