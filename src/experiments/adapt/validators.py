"""Label-free validators: scores of a domain-adaptation run computed from the target's PREDICTIONS
alone, so a checkpoint or a hyper-parameter can be chosen without a target label.

Each takes the class probabilities ``(N, K)`` of the target's validation images (no labels exist in
this module's signatures). Higher is better, except ``entropy``:

* ``entropy``: mean prediction entropy (low: confident);
* ``im``: information maximisation (SHOT), the entropy of the mean prediction minus the mean
  entropy (high: confident AND using every class);
* ``snd``: soft neighbourhood density (Saito et al. 2021), the mean entropy of each sample's
  softmax similarity to the others (high: samples sit in dense clusters);
* ``confident``: share of predictions whose top probability exceeds a threshold (the mean
  teacher's mask rate on validation images).
"""

from __future__ import annotations

import torch

from experiments.adapt.entropy import entropy as _entropy
from experiments.config.metrics import HIGHER_IS_BETTER

#: validator name -> True when higher is better (the objective's direction, from the one table)
VALIDATORS = {name: HIGHER_IS_BETTER[name] for name in ("entropy", "im", "snd", "confident")}


def soft_neighbourhood_density(probs: torch.Tensor, temperature: float = 0.05, max_samples: int = 2000) -> torch.Tensor:
    """SND of ``probs`` ``(N, K)``: cosine similarities of the L2-normalised predictions over
    ``temperature``, a softmax over the others (self excluded), the mean entropy of those rows. At
    most ``max_samples`` rows are used (evenly spaced) to bound the N x N matrix."""
    if len(probs) > max_samples:
        probs = probs[torch.linspace(0, len(probs) - 1, max_samples).long()]
    unit = torch.nn.functional.normalize(probs.float(), dim=-1)
    similarity = unit @ unit.t() / temperature
    similarity.fill_diagonal_(float("-inf"))
    return _entropy(similarity.softmax(dim=-1)).mean()


def label_free_scores(probs: torch.Tensor, threshold: float = 0.9) -> dict[str, torch.Tensor]:
    """Every validator of :data:`VALIDATORS` for the target probabilities ``probs`` ``(N, K)``."""
    probs = probs.float()
    entropy = _entropy(probs).mean()
    return {
        "entropy": entropy,
        "im": _entropy(probs.mean(dim=0, keepdim=True))[0] - entropy,
        "snd": soft_neighbourhood_density(probs),
        "confident": (probs.max(dim=-1).values > threshold).float().mean(),
    }
