"""analyze() options: the activation's Lipschitz constant."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import specbound
from specbound.analysis import LIPSCHITZ, lipschitz_of

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_table_is_a_tight_upper_bound_of_sup_derivative(name):
    x = torch.linspace(-12, 12, 240_001, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ACTIVATIONS[name](x).sum(), x)
    sup = g.abs().max().item()
    assert sup <= LIPSCHITZ[name] < sup + 0.01


def test_default_l_phi_comes_from_the_config(tiny_bert, tmp_path):
    rep = specbound.analyze(tiny_bert)
    assert rep.options["l_phi"] == 1.13 and rep.options["l_phi_from"] == "activation gelu"
    rep = specbound.analyze(tiny_bert, l_phi=1.0)
    assert rep.options["l_phi"] == 1.0 and rep.options["l_phi_from"] == "option"


def test_unknown_activation_asks_for_l_phi(tiny_bert):
    import json

    cfg = json.loads((tiny_bert / "config.json").read_text())
    cfg["hidden_act"] = "mish"
    (tiny_bert / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(specbound.InputError, match="--l-phi"):
        specbound.analyze(tiny_bert)
    assert specbound.analyze(tiny_bert, l_phi=1.2).options["l_phi"] == 1.2
    assert lipschitz_of("GELU") == 1.13
