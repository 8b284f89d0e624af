"""Configuration of experiment E4: the sweeps, sample sizes, estimator, and what deviates from
the authors' protocol (manasakai/infinite-width-attention)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEVIATIONS",
    "ESTIMATORS",
    "EXPERIMENTS",
    "QUICK_DEVIATIONS",
    "InfiniteWidthConfig",
    "Setting",
    "quick_config",
]

#: The four sweeps, in the order they run and are reported.
EXPERIMENTS = ("n_sweep", "H_sweep", "relu_n_sweep", "lowrank_H_sweep")
#: The KL estimators: the exact scale-mixture densities (default) or the authors' KDE.
ESTIMATORS = ("mixture", "kde")
POWERS_OF_TWO = (1, 2, 4, 8, 16, 32, 64, 128, 256)

DEVIATIONS = [
    "Finite-width draws come from the exact fast sampler (Wishart/Bartlett algebra on s x s "
    "matrices, same law as the explicit-weight model, tested against it by two-sample tests), not "
    "from explicit n x n weights; the identity map's clip at +-100 is left out (an event of "
    "probability < 1e-2000).",
    "Each draw records the conditional variance v of y[1,1] given tokens, scores and |w_O|; "
    "densities are the exact scale mixtures E_v N(0, v) averaged over the draws, and KL is an "
    "integral on an adaptive grid (no kernel). The authors' KDE estimate is --kl kde.",
    "H sweeps are nested within a seed: the draws at H use the first H heads of the draws at "
    "H_max (each setting is exact in law; settings of one seed share heads; seeds are "
    "independent). The authors draw every H independently.",
    "The limit is drawn once per (sweep, seed) and shared by the n values of an n sweep, as the "
    "authors do; a second independent limit draw per setting gives the estimator's floor.",
    "The low-rank variant keeps the factor H^(-1/2) of the full-width model (the authors' "
    "low-rank script omits it on both sides; KL is scale invariant, so KL(finite || limit) is "
    "unchanged, and with it N(0, sigma2_inf) is the H -> infinity law of both).",
    "The low-rank H sweep runs H in {1, 2, 4, ..., 256} (n = 64 H); the authors ran H in {1, 4, 16}.",
    "The KDE option puts its 500-point grid on the range of the samples of one (sweep, setting, "
    "seed); the authors use one range over all seeds and settings of a sweep.",
]

QUICK_DEVIATIONS = [
    "--quick: 2 seeds instead of 10",
    "10,000 samples per setting instead of 50,000 (ReLU: 20,000 instead of 100,000)",
]


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: width ``n``, heads ``H``, head width (``None``: full width)."""

    n: int
    H: int
    head_width: int | None = None


@dataclass(frozen=True)
class InfiniteWidthConfig:
    """Every knob of E4. ``samples`` / ``relu_samples``: draws per setting and seed for the
    identity / ReLU token maps; ``n_fixed`` is the width of the H sweep, ``H_fixed`` the heads
    of the n sweeps, ``head_width`` the low-rank variant's ``n_H``."""

    seed: int = 0
    n_seeds: int = 10
    samples: int = 50_000
    relu_samples: int = 100_000
    s: int = 4
    n_values: tuple[int, ...] = (16, 64, 256, 1024)
    H_values: tuple[int, ...] = POWERS_OF_TWO
    n_fixed: int = 256
    H_fixed: int = 2
    head_width: int = 64
    lowrank_H_values: tuple[int, ...] = POWERS_OF_TWO
    experiments: tuple[str, ...] = EXPERIMENTS
    kl: str = "mixture"
    grid_du: float = 0.02
    scores: str = "row"
    quick: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.seed < 0:
            raise ValueError(f"seed {self.seed}: must be a non-negative integer")
        for name in ("n_seeds", "samples", "relu_samples", "n_fixed", "H_fixed", "head_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be a positive integer")
        if self.samples < 100 or self.relu_samples < 100:
            raise ValueError(f"samples {self.samples} / {self.relu_samples}: need at least 100 per setting")
        if self.s < 2:
            raise ValueError(f"s {self.s}: need at least 2 tokens")
        for name in ("n_values", "H_values", "lowrank_H_values"):
            vals = getattr(self, name)
            if not vals or any(int(v) < 1 for v in vals) or len(set(vals)) != len(vals):
                raise ValueError(f"{name} {list(vals)}: need distinct positive integers")
        if min(self.n_values) < self.s or self.n_fixed < self.s or self.head_width < self.s:
            raise ValueError(f"every width (n, head width) must be at least s = {self.s}")
        bad = [e for e in self.experiments if e not in EXPERIMENTS]
        if bad or not self.experiments:
            raise ValueError(f"experiments {list(self.experiments)}: choose from {', '.join(EXPERIMENTS)}")
        if self.kl not in ESTIMATORS:
            raise ValueError(f"kl {self.kl!r}: use mixture or kde")
        if self.scores not in ("row", "bartlett"):
            raise ValueError(f"scores {self.scores!r}: use row or bartlett")
        if not 0 < self.grid_du <= 0.5:
            raise ValueError(f"grid_du {self.grid_du}: must be in (0, 0.5]")

    def token_map(self, experiment: str) -> str:
        return "relu" if experiment == "relu_n_sweep" else "identity"

    def samples_for(self, experiment: str) -> int:
        return self.relu_samples if self.token_map(experiment) == "relu" else self.samples

    def nested(self, experiment: str) -> bool:
        """Whether the sweep varies H (nested heads; the limit is drawn once with H_max)."""
        return experiment in ("H_sweep", "lowrank_H_sweep")

    def settings(self, experiment: str) -> list[Setting]:
        if experiment in ("n_sweep", "relu_n_sweep"):
            return [Setting(int(n), self.H_fixed) for n in sorted(self.n_values)]
        if experiment == "H_sweep":
            return [Setting(self.n_fixed, int(h)) for h in sorted(self.H_values)]
        if experiment == "lowrank_H_sweep":
            return [Setting(self.head_width * int(h), int(h), self.head_width) for h in sorted(self.lowrank_H_values)]
        raise ValueError(f"unknown experiment {experiment!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


def quick_config(**over: Any) -> InfiniteWidthConfig:
    """The ``--quick`` preset (every sweep, 2 seeds, 10,000 samples; ReLU 20,000), with
    ``over`` applied on top (an explicit ``samples`` also sets ``relu_samples`` to twice it
    unless that is given)."""
    base: dict[str, Any] = {"n_seeds": 2, "samples": 10_000, "relu_samples": 20_000, "quick": True}
    if "samples" in over and "relu_samples" not in over:
        over = {**over, "relu_samples": 2 * int(over["samples"])}
    base.update(over)
    return InfiniteWidthConfig(**base)
