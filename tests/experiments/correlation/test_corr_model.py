"""E3 models (correlation/model.py, measure.py): a failing model is listed, an unmasked
evaluation is an error, the initial weights depend on (seed, depth, width) only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from specbound.errors import InputError
from specbound.experiments import correlation as e3

pytest.importorskip("transformers")


def test_a_failing_model_is_listed_and_the_others_scored(tmp_path, monkeypatch):
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"axes": {"n_train": [16, 32, 64]}, "base": {"width": 32, "depth": 1, "steps": 2},
                                "settings": {"n_test": 64}}))
    from specbound.experiments.correlation import model as e3_model

    real_train = e3_model.train

    def train(model, cfg, hp, data):
        if hp["n_train"] == 32:
            raise FloatingPointError("training diverged (loss nan) at step 1")
        return real_train(model, cfg, hp, data)

    monkeypatch.setattr(e3_model, "train", train)
    res = e3.run_sweep(e3.load_grid(grid), tmp_path / "o", jobs=1, plots=False)
    assert list(res["models"]["n_train"]) == [16, 64]
    assert res["failed"] == [("L1-N32-n32-wd0.01-lr0.001-noise0-steps2",
                              "FloatingPointError: training diverged (loss nan) at step 1")]
    meta = json.loads((tmp_path / "o" / "config.json").read_text())
    assert meta["models_failed"][0]["model_id"].endswith("n32-wd0.01-lr0.001-noise0-steps2")
    # every weight family was evaluated; only the data-side measure (it needs input text) is listed
    assert {d["bound"] for v in meta["measures_not_evaluated"].values() for d in v} == {"attention_effective_rank"}
    assert not (tmp_path / "o" / "models" / "L1-N32-n32-wd0.01-lr0.001-noise0-steps2.pt").exists()
    monkeypatch.setattr(e3_model, "train", lambda *a: (_ for _ in ()).throw(FloatingPointError("boom")))
    with pytest.raises(InputError, match="every model of the sweep failed; first error: .*boom"):
        e3.run_sweep(e3.load_grid(grid), tmp_path / "o2", jobs=1, plots=False)


def test_masked_evaluation_without_masked_tokens_is_an_error():
    from specbound.experiments.correlation import model as e3_model

    cfg = e3.quick_config(task="masked-synthetic")
    model = e3_model.new_model(cfg, {"depth": 1, "width": 32}, 100)
    x = np.full((1, 16), 2, dtype=np.int64)  # only special tokens: nothing can be masked
    with pytest.raises(ValueError, match="no token of the 1 evaluation sequences was masked"):
        e3_model.evaluate(model, cfg, x, np.zeros(0), 100, 0)


def test_initial_weights_depend_on_seed_depth_width_only() -> None:
    import torch

    from specbound.experiments.correlation import model as e3_model

    cfg = e3.quick_config(seed=3)
    a = e3_model.new_model(cfg, {"depth": 1, "width": 32}, 4)
    state = torch.random.get_rng_state()
    b = e3_model.new_model(cfg, {"depth": 1, "width": 32}, 4)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's stream is untouched
    c = e3_model.new_model(e3.quick_config(seed=4), {"depth": 1, "width": 32}, 4)
    wa, wb, wc = (m.bert.encoder.layer[0].attention.self.query.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
