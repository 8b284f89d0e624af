"""E3 configuration (correlation/config.py): presets, grid files and their errors."""

from __future__ import annotations

import json

import pytest

from specbound.errors import InputError
from specbound.experiments import correlation as e3

pytest.importorskip("transformers")


def test_default_and_quick_grids():
    d = e3.expand_grid(e3.default_config())
    assert len(d) == 2 ** 7 and len({s.model_id for s in d}) == len(d)
    assert e3.default_config().swept_axes == list(e3.AXES)
    q = e3.expand_grid(e3.quick_config())
    assert len(q) == 16 and {s.hp_dict["width"] for s in q} == {32}
    assert e3.quick_config().swept_axes == ["depth", "n_train", "label_noise", "steps"]


def test_load_grid_yaml_and_json(tmp_path):
    y = tmp_path / "g.yaml"
    y.write_text("task: masked-synthetic\naxes:\n  depth: [1, 3]\n  lr: [0.001, 0.01, 0.1]\n"
                 "base:\n  width: 48\nsettings:\n  n_test: 100\n")
    cfg = e3.load_grid(y, seed=3)
    assert cfg.task == "masked-synthetic" and cfg.seed == 3 and cfg.settings_dict["n_test"] == 100
    specs = e3.expand_grid(cfg)
    assert len(specs) == 6 and {s.hp_dict["width"] for s in specs} == {48}
    assert cfg.swept_axes == ["depth", "lr"]
    j = tmp_path / "g.json"
    j.write_text(json.dumps({"axes": {"n_train": [10, 20]}}))
    cfg = e3.load_grid(j, task="sparse-majority")
    assert cfg.task == "sparse-majority" and len(e3.expand_grid(cfg)) == 2


@pytest.mark.parametrize("text, match", [
    ('{"axes": {"dept": [1, 2]}}', "unknown axes entry \\['dept'\\]"),
    ('{"axes": {"depth": [1, 2]}, "extra": 1}', "unknown key"),
    ('{"axes": {"depth": [0, 2]}}', "axis 'depth': value 0 is not a positive integer"),
    ('{"axes": {"label_noise": [0.0, 0.6]}}', "label_noise.*0.6.*\\[0, 0.5\\)"),
    ('{"axes": {"width": [24]}}', "not a multiple of settings.head_dim = 16"),
    ('{"axes": {"lr": [0.1, 0.1]}}', "repeats a value"),
    ('{"axes": {"lr": 0.1}}', "must be a list"),
    ('{"axes": {"lr": [0.1]}, "settings": {"support": 4}}', "support must be odd"),
    ('{"axes": {"lr": [0.1]}, "task": "vision"}', "unknown task 'vision'"),
    ('{"axes": ', "cannot parse"),
    ('{"axes": {"lr": [0.1]}}', "no axis has two or more values"),
])
def test_bad_grid_files_name_the_problem(tmp_path, text, match):
    p = tmp_path / "grid.json"
    p.write_text(text)
    with pytest.raises(InputError, match=match) as ei:
        e3.load_grid(p)
    assert str(p) in str(ei.value)


def test_missing_grid_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        e3.load_grid(tmp_path / "nope.yaml")
