"""Is a higher value of a metric better? Answered once, for every metric a run logs and every
label-free validator: the objective's direction (checkpoint selection, early stopping, sweeps,
auto's race) and the validators' ranking all read :data:`HIGHER_IS_BETTER`. No heavy imports."""

from __future__ import annotations

#: a metric's name (the part after its stage and domain: ``val/target_snd`` -> ``snd``) -> whether
#: higher is better. The label-free validators (``experiments.adapt.validators``) are listed here too.
HIGHER_IS_BETTER: dict[str, bool] = {
    "acc": True,
    "loss": False,
    "error": False,
    "entropy": False,  # mean prediction entropy: low is confident
    "im": True,  # information maximisation
    "snd": True,  # soft neighbourhood density
    "confident": True,  # share of confident predictions
}

#: a metric's best possible value, where it has one (an accuracy cannot pass 1): ``finetune=auto``'s
#: race skips candidates that cannot beat a score this close to it by more than a point
BEST_POSSIBLE: dict[str, float] = {"acc": 1.0, "error": 0.0, "loss": 0.0}

#: prefixes a metric's name may carry before its base name (a domain pair's streams)
_DOMAIN_PREFIXES = ("source_", "target_")


def base_name(metric: str) -> str:
    """``val/target_snd`` -> ``snd``, ``train/loss`` -> ``loss``, ``acc`` -> ``acc``."""
    name = metric.rpartition("/")[2]
    for prefix in _DOMAIN_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def higher_is_better(metric: str) -> bool:
    """Whether a higher ``metric`` is better; a name outside :data:`HIGHER_IS_BETTER` counts as a
    score (higher is better): ``check_objective`` refuses an objective the run does not log."""
    return HIGHER_IS_BETTER.get(base_name(metric), True)


def objective_mode(metric: str) -> str:
    """``max`` or ``min`` for ``metric`` (Lightning's and Optuna's spelling; resolver
    ``${objective_mode:...}``)."""
    return "max" if higher_is_better(metric) else "min"


def best_possible(metric: str) -> float | None:
    """The best value ``metric`` can take (1 for an accuracy), None when it has no bound."""
    return BEST_POSSIBLE.get(base_name(metric))


def is_proportion(metric: str) -> bool:
    """Whether ``metric`` is a share of samples (accuracy, error): its noise on ``n`` samples is binomial."""
    return base_name(metric) in ("acc", "error")
