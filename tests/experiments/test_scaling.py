"""E2 (growth of the proxies with depth and width): language, trainer, grid files, fits,
hub-cache resolution, the offline error and the ``--quick`` command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from specbound.errors import InputError
from specbound.experiments import scaling_grid as grid
from specbound.experiments import scaling_synthetic as synth
from specbound.experiments.synthetic_language import CLASS_SIZES, CLS, PAD, SEP, SyntheticLanguage

torch.set_num_threads(1)


# -- the synthetic language ---------------------------------------------------------------------
def test_language_is_reproducible_and_seeded() -> None:
    a = SyntheticLanguage(3).corpus(50, 32, seed=7)
    b = SyntheticLanguage(3).corpus(50, 32, seed=7)
    assert a.dtype == np.int64 and a.shape == (50, 32)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, SyntheticLanguage(3).corpus(50, 32, seed=8))
    assert not np.array_equal(a, SyntheticLanguage(4).corpus(50, 32, seed=7))
    lang = SyntheticLanguage(3)
    assert (a[:, 0] == CLS).all() and (a[:, -1] == SEP).all() and (a != PAD).all()
    assert a.min() >= 0 and a.max() < lang.vocab_size


def test_language_has_agreement_and_selection() -> None:
    """Determiners agree with their noun, and a transitive verb's objects are far from uniform."""
    lang = SyntheticLanguage(0)
    c = lang.corpus(400, 64, seed=1)
    off, n = lang.offsets, CLASS_SIZES
    cls_of = {}
    for name, o in off.items():
        for i in range(n[name]):
            cls_of[o + i] = name
    agree = total = 0
    obj_lemmas: dict[int, list[int]] = {}
    for row in c:
        toks = [cls_of.get(int(t), "") for t in row]
        for i, t in enumerate(toks):
            if t.startswith("DET_"):
                j = i + 1
                while j < len(toks) and toks[j] == "ADJ":
                    j += 1
                if j < len(toks) - 1 and toks[j].startswith("N_"):
                    total += 1
                    agree += toks[j][2:] == t[4:]
            if t.startswith("Vtr_") and i + 2 < len(toks) - 1:
                j = i + 1
                while j < len(toks) and toks[j] in ("DET_sg", "DET_pl", "ADJ"):
                    j += 1
                if j < len(toks) - 1 and toks[j].startswith("N_"):
                    verb = int(row[i]) - off[t]
                    obj_lemmas.setdefault(verb, []).append(int(row[j]) - off[toks[j]])
    assert total > 500 and agree == total
    # selection: for the most frequent verb, its top object lemma is far above the 1/40 uniform share
    verb, objs = max(obj_lemmas.items(), key=lambda kv: len(kv[1]))
    top_share = np.bincount(objs).max() / len(objs)
    assert len(objs) > 50 and top_share > 3 / n["N_sg"]


def test_trained_encoder_beats_unigram_and_untrained_does_not(tmp_path: Path) -> None:
    recipe = synth.QUICK_RECIPE
    corpora = synth.make_corpora(recipe, seed=0)
    torch.manual_seed(0)
    from transformers import BertForMaskedLM

    untrained = BertForMaskedLM(synth.bert_config(1, 64, corpora.language.vocab_size, recipe))
    ev0 = synth.evaluate_masked(untrained, corpora, recipe, seed=0)
    assert ev0["heldout_masked_ce"] > ev0["unigram_masked_ce"]  # control: the check can fail

    meta = synth.train_one(1, 64, tmp_path / "m", corpora, recipe, seed=0)
    assert meta["reused"] is False
    assert meta["heldout_masked_tokens"] > 1000
    assert meta["heldout_masked_ce"] < meta["unigram_masked_ce"] - 0.1, meta
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "config.json").is_file()
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]) == (1, 64, 2, 256)
    again = synth.train_one(1, 64, tmp_path / "m", corpora, recipe, seed=0)
    assert again["reused"] is True and again["heldout_masked_ce"] == meta["heldout_masked_ce"]


# -- grid files ---------------------------------------------------------------------------------
def test_read_grid_csv_and_json(tmp_path: Path) -> None:
    (tmp_path / "m1").mkdir()
    (tmp_path / "g.csv").write_text("source,L,N,name\nm1,2,64,small\norg/model-x,4,128,\n")
    g = grid.read_grid(tmp_path / "g.csv")
    assert g[0] == grid.GridEntry("small", str(tmp_path / "m1"), 2, 64)  # relative to the file
    assert g[1] == grid.GridEntry("L4_N128", "org/model-x", 4, 128)
    (tmp_path / "g.json").write_text(json.dumps([{"source": "a/b", "L": 2, "N": 64}, {"path": "c/d", "l": "6", "n": 256.0}]))
    assert [(e.source, e.L, e.N) for e in grid.read_grid(tmp_path / "g.json")] == [("a/b", 2, 64), ("c/d", 6, 256)]
    (tmp_path / "h.json").write_text(json.dumps({"models": [{"source": "a/b", "L": 2, "N": 64, "name": "x"}]}))
    assert grid.read_grid(tmp_path / "h.json")[0].name == "x"


@pytest.mark.parametrize(
    ("fname", "text", "match"),
    [
        ("a.csv", "source,L,N\nm,2,64\nm2,,64\n", r"row 3: missing 'L'"),
        ("a.csv", "source,L,N\nm,0,64\n", r"row 2: L must be a positive integer"),
        ("a.csv", "source,L,N\nm,2,abc\n", r"row 2: N must be a positive integer, got 'abc'"),
        ("a.csv", "source,L,N\nm,2,64.5\n", r"N must be a positive integer"),
        ("a.csv", "source,L,N\n,2,64\n", r"row 2: missing 'source'"),
        ("a.csv", "model,depth,width\nm,2,64\n", r"header must name the columns source, L, N"),
        ("a.csv", "source,L,N\n", r"lists no models"),
        ("a.csv", "source,L,N\nm,2,64\nn,2,64\n", r"row 3: \(L=2, N=64\) is listed twice"),
        ("a.json", "{not json", r"not valid JSON"),
        ("a.json", '{"x": 1}', r"expected a JSON list"),
        ("a.json", '[{"source": "m", "L": 2, "N": 64}, 5]', r"entry 1: expected an object"),
        ("a.json", '[{"source": "m", "L": true, "N": 64}]', r"entry 0: L must be a positive integer"),
        ("a.yaml", "x", r"must be .csv or .json"),
    ],
)
def test_read_grid_bad_rows(tmp_path: Path, fname: str, text: str, match: str) -> None:
    (tmp_path / fname).write_text(text)
    with pytest.raises(InputError, match=match):
        grid.read_grid(tmp_path / fname)


# -- fits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (60, 2.0003)])
def test_t_quantile_matches_table(df: int, expected: float) -> None:
    assert grid.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert grid.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)
    assert grid.t_cdf(grid.t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-10)


def test_fit_line_recovers_known_exponent_and_covers_it() -> None:
    rng = np.random.default_rng(0)
    N = np.array([64, 128, 256, 512, 1024, 2048])
    hits = 0
    for _ in range(200):
        y = 0.3 + 1.7 * np.log10(N) + rng.normal(0, 0.05, len(N))
        f = grid.fit_line(np.log10(N), y)
        hits += f.ci_low <= 1.7 <= f.ci_high
    assert f.interval == "95% t, df=4" and f.ci_low < f.slope < f.ci_high
    assert 0.9 <= hits / 200 <= 0.99  # nominal 95% coverage
    exact = grid.fit_line(np.log10(N), 2.5 * np.log10(N))
    assert exact.slope == pytest.approx(2.5) and exact.ci_high - exact.ci_low < 1e-9
    two = grid.fit_line([1.0, 2.0], [3.0, 5.0])
    assert two.slope == pytest.approx(2.0) and two.ci_low is None and two.ci_high is None
    assert "not computable: only 2 points" in two.interval


def test_fit_exponents_on_a_grid_with_known_growth() -> None:
    Ls, Ns = [2, 4, 6], [64, 128, 256]
    rows = [
        {"L": L, "N": N, "log10_a": 1.5 * math.log10(N) + 0.2 * L, "log10_b": 3.0 * math.log10(N) + 0.5 * L}
        for L in Ls
        for N in Ns
    ]
    rows.append({"L": 8, "N": 64, "log10_a": 1.5 * math.log10(64) + 1.6, "log10_b": 3.0 * math.log10(64) + 4.0})
    ex = grid.fit_exponents(pd.DataFrame(rows), ["a", "b", "absent"])
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


# -- hub cache ----------------------------------------------------------------------------------
def _fake_cache_model(cache: Path, repo_id: str, L: int, N: int, rev: str) -> Path:
    from transformers import BertConfig, BertModel

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    torch.manual_seed(L * 1000 + N)
    model = BertModel(BertConfig(vocab_size=40, hidden_size=N, num_hidden_layers=L, num_attention_heads=N // 64,
                                 intermediate_size=4 * N, max_position_embeddings=16))
    model.save_pretrained(snap, safe_serialization=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return snap


@pytest.fixture()
def fake_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    _fake_cache_model(cache, "google/bert_uncased_L-2_H-128_A-2", 2, 128, "a" * 40)
    _fake_cache_model(cache, "google/bert_uncased_L-2_H-256_A-4", 2, 256, "b" * 40)
    # a repo whose refs/main points at a snapshot that is not there: not usable
    broken = cache / "models--google--bert_uncased_L-4_H-128_A-2"
    (broken / "refs").mkdir(parents=True)
    (broken / "refs" / "main").write_text("c" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_cache_resolution_finds_snapshots(fake_cache: Path) -> None:
    assert grid.hub_cache_dir() == fake_cache
    path = grid.resolve_hub_checkpoint("google/bert_uncased_L-2_H-128_A-2")
    assert path == fake_cache / "models--google--bert_uncased_L-2_H-128_A-2" / "snapshots" / ("a" * 40)
    with pytest.raises(grid.CheckpointUnavailable, match="not in the local cache") as e:
        grid.resolve_hub_checkpoint("google/bert_uncased_L-4_H-128_A-2")
    assert e.value.offline
    present, missing = grid.resolve_entries(grid.miniature_ids())
    assert [e.name for e, _ in present] == ["L2_N128", "L2_N256"]
    assert len(missing) == 22 and all("offline" in why for _, why in missing)


def test_miniatures_run_on_the_cached_ones(fake_cache: Path, tmp_path: Path) -> None:
    from specbound.experiments.scaling import ScalingConfig, run_scaling

    events: list[tuple[str, int, int]] = []
    res = run_scaling(ScalingConfig(family="miniatures", out=tmp_path / "out"), progress=lambda *a: events.append(a))
    assert list(res.models["name"]) == ["L2_N128", "L2_N256"]
    assert list(res.models["source"]) == ["google/bert_uncased_L-2_H-128_A-2", "google/bert_uncased_L-2_H-256_A-4"]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert len(cfg["missing"]) == 22 and cfg["missing"][0]["source"].startswith("google/bert_uncased_L-")
    ex = pd.read_csv(tmp_path / "out" / "exponents.csv")
    assert set(ex["x"]) == {"log10_N"} and ex["interval"].str.contains("only 2 points").all()
    assert events and events[-1][0] == "done"


def test_offline_without_cache_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from specbound.cli import app

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from specbound.experiments.scaling import ScalingConfig, run_scaling

    with pytest.raises(InputError, match="--family synthetic"):
        run_scaling(ScalingConfig(family="miniatures", out=tmp_path / "o"))
    r = CliRunner().invoke(app, ["experiment", "scaling", "--family", "miniatures", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 1
    msg = r.stderr.strip() if hasattr(r, "stderr") else r.output.strip()
    assert "none of the 24 BERT miniatures" in msg and "--family synthetic" in msg
    assert "Traceback" not in r.output


def test_unreachable_hub_is_tried_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE, the first connection failure stops further download attempts."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = {"online": 0}

    def fake_snapshot_download(repo_id: str, **kw):  # type: ignore[no-untyped-def]
        if not kw.get("local_files_only"):
            calls["online"] += 1
        raise LocalEntryNotFoundError("ConnectError: Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    present, missing = grid.resolve_entries(grid.miniature_ids(), cache_dir=tmp_path)
    assert present == [] and len(missing) == 24
    assert calls["online"] == 1
    assert "the hub cannot be reached" in missing[0][1] and "offline" in missing[1][1]


# -- the command --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--family", "nonsense"], "use miniatures, synthetic or a .csv/.json grid file"),
        (["--family", "missing.csv"], "no such grid file"),
        (["--seed", "-1"], "--seed -1"),
        (["--threads", "0"], "--threads 0"),
        (["--device", "warp9"], "not a torch device"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], match: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from specbound.cli import app

    r = CliRunner().invoke(app, ["experiment", "scaling", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    text = (r.stderr if hasattr(r, "stderr") else r.output).strip()
    assert match in text and len(text.splitlines()) == 1 and "Traceback" not in text


def test_quick_end_to_end_through_the_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from specbound.cli import app

    out = tmp_path / "e2"
    r = CliRunner().invoke(app, ["experiment", "scaling", "--quick", "--out", str(out), "--seed", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    expected = ["models.csv", "exponents.csv", "norms.csv", "config.json", "proxy_vs_N.png", "proxy_vs_L.png",
                "term_curves.png", "singular_values.png", "norms_vs_N.png"]
    for f in expected:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    for f in expected[4:]:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    models = pd.read_csv(out / "models.csv")
    assert sorted(zip(models["L"], models["N"])) == [(L, N) for L in (1, 2, 3) for N in (32, 64)]
    log_cols = [c for c in models if c.startswith("log10_")]
    assert {"log10_spectrum_adaptive", "log10_edelman"} <= set(log_cols)
    assert np.isfinite(models[log_cols + ["mean_p_star", "sum_spectral", "sum_norm_21", "sum_norm_11"]].to_numpy(float)).all()
    assert (models["log10_spectrum_adaptive"] <= models["log10_sa_p0_cap"] + 1e-9).all()  # p = 0 is on the grid
    assert models["frac_p_star_zero"].between(0, 1).all()
    assert (models["H"] == models["N"] // 32).all() and (models["source"].str.startswith("checkpoints")).all()
    # every trained grid point learned something beyond token frequencies
    assert (models["heldout_masked_ce"] < models["unigram_masked_ce"]).all()
    ex = pd.read_csv(out / "exponents.csv")
    assert set(ex["family"]) >= {"spectrum_adaptive", "edelman", "sa_p0_cap"}
    finite = ex["slope"].notna().all() and np.isfinite(ex["slope"]).all()
    assert finite
    two = ex[ex["n_points"] == 2]
    three = ex[(ex["n_points"] == 3) & (ex["fixed"] != "all")]
    assert len(two) and two["ci_low"].isna().all() and two["interval"].str.contains("not computable").all()
    assert len(three) and (three["ci_low"] <= three["slope"]).all() and (three["slope"] <= three["ci_high"]).all()
    norms = pd.read_csv(out / "norms.csv")
    assert np.isfinite(norms[["mean_spectral", "mean_norm_21", "mean_norm_11"]].to_numpy(float)).all()
    assert (norms["mean_norm_11"] >= norms["mean_norm_21"] - 1e-9).all()  # ‖A‖₁,₁ ≥ ‖A‖₂,₁ column by column
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 1 and cfg["config"]["quick"] is True and cfg["wall_time_seconds"] > 0
    assert cfg["versions"]["torch"] == torch.__version__ and cfg["recipe"]["steps"] == synth.QUICK_RECIPE.steps

    # a rerun reuses the trained checkpoints and only analyses
    r2 = CliRunner().invoke(app, ["experiment", "scaling", "--quick", "--out", str(out), "--seed", "1", "--threads", "1"])
    assert r2.exit_code == 0, r2.output
    again = pd.read_csv(out / "models.csv")
    assert again["reused"].all()
    assert np.allclose(again["log10_spectrum_adaptive"], models["log10_spectrum_adaptive"])


def test_grid_file_with_wrong_depth_is_an_error(fake_cache: Path, tmp_path: Path) -> None:
    from specbound.experiments.scaling import ScalingConfig, run_scaling

    snap = fake_cache / "models--google--bert_uncased_L-2_H-128_A-2" / "snapshots" / ("a" * 40)
    (tmp_path / "g.json").write_text(json.dumps([{"source": str(snap), "L": 4, "N": 128}]))
    with pytest.raises(InputError, match=r"the grid says L=4, N=128 but the checkpoint has L=2, N=128"):
        run_scaling(ScalingConfig(family=str(tmp_path / "g.json"), out=tmp_path / "o"))


def test_download_falls_back_to_pytorch_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online: safetensors are asked for first; a repo with only pytorch_model.bin gets that."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    asked: list[list[str]] = []

    def fake_snapshot_download(repo_id: str, **kw):  # type: ignore[no-untyped-def]
        if kw.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        patterns = list(kw["allow_patterns"])
        asked.append(patterns)
        snap = Path(kw["cache_dir"]) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / ("d" * 40)
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text("{}")
        if "pytorch_model.bin" in patterns:  # the repo has no safetensors
            (snap / "pytorch_model.bin").write_bytes(b"x")
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path = grid.resolve_hub_checkpoint("google/bert_uncased_L-2_H-128_A-2", cache_dir=tmp_path)
    assert (path / "pytorch_model.bin").is_file()
    assert len(asked) == 2 and "pytorch_model.bin" not in asked[0] and "*.safetensors" in asked[0]


def test_unreadable_checkpoint_is_listed_and_the_rest_analysed(fake_cache: Path, tmp_path: Path) -> None:
    from specbound.experiments.scaling import ScalingConfig, run_scaling

    snap = fake_cache / "models--google--bert_uncased_L-2_H-128_A-2" / "snapshots" / ("a" * 40)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bad / "model.safetensors").write_bytes(b"\x00" * 4)  # truncated
    (tmp_path / "g.csv").write_text(f"source,L,N\n{snap},2,128\nbad,4,256\n")
    res = run_scaling(ScalingConfig(family=str(tmp_path / "g.csv"), out=tmp_path / "o"))
    assert list(res.models["name"]) == ["L2_N128"]
    assert len(res.missing) == 1 and res.missing[0]["name"] == "L4_N256"
    assert res.missing[0]["reason"].startswith("analysis failed:") and "safetensors" in res.missing[0]["reason"]
