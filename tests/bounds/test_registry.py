"""bounds/__init__.py: the registry, user families (the new and the earlier evaluate signature),
entry-point plugins, and the errors that name a failing family."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

import specbound
import specbound.bounds as bmod
from specbound.bounds import Bound, BoundError, BoundResult, NotApplicable, available_bounds, register_bound
from specbound.report.io import report_json

from bounds.test_catalogue import chain
from builders import formed, make_model


# ---------------------------------------------------------------- user bounds
class FrobeniusOfOV(Bound):
    name = "user_ov_frobenius"
    title = "Sum of ||OV||_F (a user's bound)"
    citation = "A user, 2026."
    status = "measure"

    def evaluate(self, spectra, params):
        s = sum(float(m.values.double().pow(2).sum().sqrt()) for _, _, k, m in spectra.matrices() if k == "OV")
        return BoundResult(self.name, math.log10(s), self.status, self.citation, notes=["user"])


@pytest.fixture
def registry(monkeypatch):
    """An isolated copy of the registry (user registrations vanish after the test)."""
    monkeypatch.setattr(bmod, "_REGISTRY", dict(bmod._REGISTRY))
    return bmod._REGISTRY


class StableRankSum(Bound):
    """A family in the current signature: reads the MatrixTable."""

    name = "user_stable_rank_sum"
    citation = "A user, 2026."
    status = "measure"

    def evaluate(self, inp, params):
        return BoundResult(self.name, math.log10(float(inp.table.frame["stable_rank"].sum())), self.status,
                           self.citation)


def test_user_bound_on_the_matrix_table(registry):
    register_bound(StableRankSum())
    tw = make_model()
    rep = specbound.analyze(tw, bounds="user_stable_rank_sum")
    want = sum((np.linalg.norm(A) / np.linalg.norm(A, 2)) ** 2 for _, A in chain(formed(tw)))
    assert rep.bounds["user_stable_rank_sum"].value == pytest.approx(want, rel=1e-9)


def test_user_bound_through_analyze_and_json(registry):
    register_bound(FrobeniusOfOV())
    tw = make_model()
    rep = specbound.analyze(tw)
    ov = sum(np.linalg.norm(A) for k, A in chain(formed(tw)) if k == "OV")
    assert rep.bounds["user_ov_frobenius"].value == pytest.approx(ov, rel=1e-9)
    assert json.loads(report_json(rep))["bounds"]["user_ov_frobenius"]["status"] == "measure"

    class Structural:  # no subclassing: the protocol is enough
        name, citation, status = "user_structural", "me", "proxy"
        needs = ("seq_len",)

        def evaluate(self, spectra, params):
            return BoundResult(self.name, float(math.log10(params.seq_len)), self.status, self.citation)

    register_bound(Structural())
    assert specbound.analyze(tw, bounds="user_structural", seq_len=1000).bounds["user_structural"].log10_value == pytest.approx(3.0)
    assert "user_structural" in {d["bound"] for d in specbound.analyze(tw).not_evaluated}


def test_user_bound_failures_name_the_bound(registry):
    class Nan(FrobeniusOfOV):
        name = "user_nan"

        def evaluate(self, spectra, params):
            return BoundResult(self.name, float("nan"), self.status, self.citation)

    class Boom(FrobeniusOfOV):
        name = "user_boom"

        def evaluate(self, spectra, params):
            raise ZeroDivisionError("oops")

    class Na(FrobeniusOfOV):
        name = "user_na"

        def evaluate(self, spectra, params):
            raise NotApplicable("nothing to measure here")

    for cls in (Nan, Boom, Na):
        register_bound(cls)
    tw = make_model()
    with pytest.raises(BoundError, match="user_nan.*finite"):
        specbound.analyze(tw, bounds="user_nan")
    with pytest.raises(BoundError, match="user_boom.*ZeroDivisionError: oops"):
        specbound.analyze(tw, bounds="user_boom")
    rep = specbound.analyze(tw, bounds="user_na,edelman")
    assert rep.not_evaluated == [{"bound": "user_na", "reason": "nothing to measure here"}]
    with pytest.raises(ValueError, match="evaluate"):
        register_bound(type("X", (), {"name": "x", "citation": "c", "status": "proxy"})())


PLUGIN = '''
import math
from specbound.bounds import Bound, BoundResult

class PluginBound(Bound):
    name = "plugin_l"
    title = "number of layers"
    citation = "plugin author"
    status = "measure"

    def evaluate(self, spectra, params):
        return BoundResult(self.name, math.log10(spectra.info.n_layers), self.status, self.citation)
'''


def make_dist(tmp_path, entry: str, module: str = PLUGIN):
    (tmp_path / "sb_plugin_mod.py").write_text(module)
    di = tmp_path / "sb_plugin-0.1.dist-info"
    di.mkdir()
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: sb-plugin\nVersion: 0.1\n")
    (di / "entry_points.txt").write_text(f"[specbound.bounds]\n{entry}\n")


def test_entry_point_plugin_is_loaded_lazily_once(registry, tmp_path, monkeypatch):
    make_dist(tmp_path, "plugin_l = sb_plugin_mod:PluginBound")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sb_plugin_mod", raising=False)
    monkeypatch.setattr(bmod, "_plugins_loaded", False)
    assert "plugin_l" not in registry
    assert "plugin_l" in available_bounds()
    assert bmod.load_plugins() == []  # once
    rep = specbound.analyze(make_model(L=3), bounds="plugin_l")
    assert rep.bounds["plugin_l"].value == pytest.approx(3.0)


def test_failing_plugin_is_an_error_naming_it(registry, tmp_path, monkeypatch):
    make_dist(tmp_path, "broken = sb_plugin_mod:DoesNotExist")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sb_plugin_mod", raising=False)
    monkeypatch.setattr(bmod, "_plugins_loaded", False)
    with pytest.raises(BoundError, match="plugin 'broken'.*sb_plugin_mod:DoesNotExist.*failed to load"):
        available_bounds()


