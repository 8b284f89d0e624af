"""The seeded synthetic language of E2 and of E3's masked task (experiments/synthetic_language.py)."""

from __future__ import annotations

import numpy as np

from specbound.experiments.synthetic_language import CLASS_SIZES, CLS, PAD, SEP, SyntheticLanguage


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
