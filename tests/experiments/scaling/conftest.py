"""A fake Hugging Face hub cache with two BERT miniatures (and a broken entry), offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def fake_cache_model(cache: Path, repo_id: str, L: int, N: int, rev: str) -> Path:
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
    fake_cache_model(cache, "google/bert_uncased_L-2_H-128_A-2", 2, 128, "a" * 40)
    fake_cache_model(cache, "google/bert_uncased_L-2_H-256_A-4", 2, 256, "b" * 40)
    # a repo whose refs/main points at a snapshot that is not there: not usable
    broken = cache / "models--google--bert_uncased_L-4_H-128_A-2"
    (broken / "refs").mkdir(parents=True)
    (broken / "refs" / "main").write_text("c" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache
