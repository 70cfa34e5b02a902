"""``finetune=auto``'s options: the guidance table's thresholds and cells, the race's budget and
neighbours. A choice, not a strategy that trains: the run's pipeline resolves it into the strategy
it chooses before anything is built (:mod:`experiments.pipeline.auto`). No torch here: the config
check validates it before heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field

from experiments.finetune.strategies import FinetuneStrategy, _integer, _number, _require

#: what races against each strategy when ``auto`` confirms its prior (``finetune.neighbours``)
NEIGHBOURS: dict[str, list[str]] = {
    "classifier_only": ["lp_ft", "partial"],
    "partial": ["classifier_only", "full"],
    "full": ["classifier_only", "lora", "surgical", "scratch"],
    "lp_ft": ["classifier_only", "full"],
    "gradual": ["partial", "full"],
    "scratch": ["full", "lp_ft"],
}
#: the cells of the guidance table, as ``Auto``'s keys: ``<domain>_<size>``
CELLS = ("similar_small", "similar_large", "different_small", "different_large")


@dataclass
class Auto(FinetuneStrategy):
    """Measure the run before fitting, place it in the guidance table, train that cell's strategy.

    Never trains itself: the pipeline replaces it with the chosen strategy before anything is
    built. The thresholds are starting values, to be calibrated on ``benchmarks/transfer_table.py``.
    A cell or a neighbour names any ``finetune=`` option, a strategy added through
    ``hydra.searchpath`` included (a name that has no yaml is refused when auto composes it).

    Args:
        large_from: labelled training samples per class from which the data counts as large.
        shift_threshold: BatchNorm shift (0 = the target's feature statistics equal the ones stored
            in the weights, 1 = totally different) from which the domain counts as different.
        probe_threshold: a linear probe on frozen features below this accuracy, measured from
            chance (0) to perfect (1), says the features do not separate the target's classes.
        max_samples: at most this many training (and validation) images are measured.
        similar_small, similar_large, different_small, different_large: the strategy of each cell
            (a ``finetune=`` name; the keys it needs are derived from the measurements).
        backbone_lr_mult, layer_decay, train_bn, cache_features: passed to the chosen strategy
            (not to ``scratch``).
        confirm: race the cell's strategy (the prior) against its ``neighbours`` on the labelled
            data before training (:mod:`experiments.finetune.race`); false keeps the prior.
        race_budget: the backbone candidates' optimizer steps in the race, as a fraction of the
            run's (0.5: the whole auto run costs about 1.5 runs); frozen candidates are nearly free
            and not counted (:mod:`experiments.finetune.race`).
        neighbours: per strategy, the plausible alternatives that race against it.
        scratch_steps_mult, scratch_lr_mult: scratch's own budget and rate, as a candidate and when
            chosen (random weights converge later than pretrained ones: the race must not hold
            scratch to the fine-tuning budget).
    """

    name: str = "auto"
    large_from: int = 25
    shift_threshold: float = 0.05
    probe_threshold: float = 0.6
    max_samples: int = 2000
    similar_small: str = "classifier_only"
    similar_large: str = "partial"
    different_small: str = "full"
    different_large: str = "full"
    confirm: bool = True
    race_budget: float = 0.5
    neighbours: dict[str, list[str]] = field(default_factory=lambda: dict(NEIGHBOURS))
    scratch_steps_mult: float = 2.0
    scratch_lr_mult: float = 1.0

    def validate(self, max_epochs: int, n_blocks: int | None = None) -> None:
        super().validate(max_epochs, n_blocks)
        _require(isinstance(self.confirm, bool), "confirm", self.confirm, "true or false")
        r = self.race_budget
        _require(_number(r) and 0 < r <= 1, "race_budget", r, "a number in (0, 1] (a fraction of the run's steps)")
        for strategy, others in dict(self.neighbours or {}).items():
            _require(all(_option_name(o) for o in others or ()), f"neighbours.{strategy}", list(others or ()),
                     "a list of finetune= option names")
        _require(_number(self.scratch_steps_mult) and self.scratch_steps_mult >= 1, "scratch_steps_mult",
                 self.scratch_steps_mult, "a number >= 1 (scratch's budget against the run's)")
        _require(_number(self.scratch_lr_mult) and self.scratch_lr_mult > 0, "scratch_lr_mult",
                 self.scratch_lr_mult, "a number > 0")
        n, s, p, m = self.large_from, self.shift_threshold, self.probe_threshold, self.max_samples
        _require(_integer(n) and n >= 1, "large_from", n, "an integer >= 1 (labelled samples per class)")
        _require(_number(s) and 0 < s < 1, "shift_threshold", s, "a number in (0, 1)")
        _require(_number(p) and 0 < p <= 1, "probe_threshold", p, "a number in (0, 1]")
        _require(_integer(m) and m >= 10, "max_samples", m, "an integer >= 10")
        for cell in CELLS:
            choice = getattr(self, cell)
            _require(_option_name(choice) and choice != self.name, cell, choice, "a finetune= option name other than auto")

    def shared_keys(self) -> dict[str, object]:
        """The keys every strategy takes, as given to ``auto`` (passed on to its choice)."""
        return {"backbone_lr_mult": self.backbone_lr_mult, "layer_decay": self.layer_decay,
                "train_bn": self.train_bn, "cache_features": self.cache_features}


def _option_name(value: object) -> bool:
    """A plausible ``finetune=`` option name (whether its yaml exists is Hydra's to say)."""
    return isinstance(value, str) and value.strip() != "" and "/" not in value
