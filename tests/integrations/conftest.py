"""The tracking tests train tiny models: one torch thread each (restored after the test). On a
shared 2-core machine a tiny BERT step runs 3-6x faster on one thread than on two."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
