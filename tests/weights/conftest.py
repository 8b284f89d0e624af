"""Fixtures of the weights tests: tiny saved models (see ``tiny_models``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from builders import build


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[torch.nn.Module, Path]]:
    """``saved(family, task=False)`` → (model, folder with config.json + model.safetensors), cached."""
    cache: dict[tuple[str, bool], tuple[torch.nn.Module, Path]] = {}

    def get(family: str, task: bool = False) -> tuple[torch.nn.Module, Path]:
        key = (family, task)
        if key not in cache:
            m = build(family, task=task)
            folder = tmp_path_factory.mktemp(f"{family}{'_task' if task else ''}")
            m.save_pretrained(folder)
            assert (folder / "model.safetensors").is_file()
            cache[key] = (m, folder)
        return cache[key]

    return get
