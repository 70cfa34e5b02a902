"""``finetune=auto``'s decision: measured numbers in, a cell of the guidance table and a strategy out.

Pure Python (no torch), so every rule can be checked on synthetic numbers; the measuring is in
:mod:`experiments.finetune.measure`. The rules, with :class:`~experiments.finetune.auto.Auto`'s
keys:

* **size**: ``small`` when the training split has fewer than ``large_from`` labelled samples per
  class (its mean over the classes), else ``large``.
* **domain**, a model with BatchNorm: ``different`` when the BatchNorm shift (overall) reaches
  ``shift_threshold`` *and* the linear probe's accuracy, measured from chance (0) to perfect (1),
  stays under ``probe_threshold``. When the two disagree the run counts as ``similar`` and the
  reason says which one disagreed: on the strategy table (docs/benchmarks.md) calling a similar domain
  different costs more (a large similar target would train every block instead of the last ones)
  than the other mistake. A model without BatchNorm: the probe alone.
* **random init**: nothing to transfer, ``scratch`` (domain ``None``).
* **strategy** of the cell: ``Auto.<domain>_<size>``; the keys follow the measurements:
  ``partial.n_blocks`` counts the blocks from the head down to the earliest one whose shift reaches
  ``shift_threshold`` (1 when none does; all of them means ``full``); ``gradual.unfreeze_every``
  thaws that deep (every block when none does) by the end; ``lp_ft.probe_epochs`` is a quarter of
  the run.
* In the different/small cell a warning says that transfer is unsuitable and what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from experiments.finetune.auto import Auto
from experiments.finetune.strategies import FinetuneStrategy

DA_COMMAND = "python run.py experiment=da_digits_m"
DA_OWN_DATA = "python run.py data=da_folders data.source.root=SRC data.target.root=TGT adapt=mean_teacher"


@dataclass(frozen=True)
class Measurements:
    """What the advisor measured on the target's training split (None: not measurable).

    ``block_shift`` holds one value per block of ``blocks`` (None: no BatchNorm in that block);
    ``overall_shift`` is the mean over all BatchNorm layers (None: the model has none);
    ``probe_acc`` is the validation accuracy of a linear probe on frozen features.
    """

    num_classes: int
    samples_per_class: float
    pretrained: bool = True
    blocks: tuple[str, ...] = ()
    block_shift: tuple[float | None, ...] = ()
    overall_shift: float | None = None
    probe_acc: float | None = None

    @property
    def chance(self) -> float:
        return 1.0 / max(self.num_classes, 1)

    @property
    def probe_above_chance(self) -> float | None:
        """Probe accuracy on a scale from chance (0) to perfect (1)."""
        if self.probe_acc is None:
            return None
        return (self.probe_acc - self.chance) / (1 - self.chance) if self.num_classes > 1 else 1.0


@dataclass(frozen=True)
class Advice:
    """The cell, the chosen strategy with its keys, and why."""

    strategy: str
    keys: dict[str, Any]
    domain: str | None
    size: str
    reason: str
    measured: Measurements
    warning: str | None = None
    shared_keys: dict[str, Any] = field(default_factory=dict)

    @property
    def given_keys(self) -> dict[str, Any]:
        """Every key the chosen strategy gets: ``auto``'s shared keys set away from their defaults
        (not to scratch), then the keys derived from the measurements."""
        return {**({} if self.strategy == "scratch" else self.shared_keys), **self.keys}

    def record(self) -> dict[str, Any]:
        """``finetune_detail.auto`` of results.json."""
        m = self.measured
        out = {
            "strategy": self.strategy,
            "keys": self.given_keys,
            "cell": {"domain": self.domain, "size": self.size},
            "shift": {"per_block": dict(zip(m.blocks, m.block_shift)), "overall": m.overall_shift},
            "probe_acc": m.probe_acc,
            "samples_per_class": m.samples_per_class,
            "reason": self.reason,
        }
        if self.warning:
            out["warning"] = self.warning
        return out

    def report(self, with_warning: bool = True) -> str:
        """Lines for the console and TensorBoard."""
        m = self.measured
        keys = ", ".join(f"{k}={v}" for k, v in self.given_keys.items())
        lines = [f"finetune=auto -> {self.strategy}{f' ({keys})' if keys else ''}"]
        lines.append(f"  cell: domain {self.domain or '-'}, size {self.size}")
        lines.append(f"  samples per class: {m.samples_per_class:.1f} ({m.num_classes} classes)")
        if m.overall_shift is not None:
            per_block = ", ".join(f"{b} {_fmt(s)}" for b, s in zip(m.blocks, m.block_shift))
            lines.append(f"  BatchNorm shift: overall {m.overall_shift:.3f}; per block: {per_block}")
        if m.probe_acc is not None:
            lines.append(f"  linear probe: val acc {m.probe_acc:.3f} (chance {m.chance:.3f})")
        lines.append(f"  reason: {self.reason}")
        if self.warning and with_warning:
            lines.append(f"  WARNING: {self.warning}")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def decide(m: Measurements, auto: Auto, max_epochs: int) -> Advice:
    """Place the measured run in the guidance table and choose its strategy and keys."""
    small = m.samples_per_class < auto.large_from
    size = "small" if small else "large"
    size_text = (f"{m.samples_per_class:.1f} labelled training samples per class "
                 f"({'<' if small else '>='} large_from={auto.large_from}: {size} data)")
    if not m.pretrained:
        reason = f"the model starts from random weights: nothing to transfer, so scratch; {size_text}"
        return Advice("scratch", {}, None, size, reason, m)
    domain, domain_text = _domain(m, auto)
    strategy = getattr(auto, f"{domain}_{size}")
    keys, keys_text = keys_for(strategy, m, auto, max_epochs)
    if strategy == "partial" and keys["n_blocks"] >= len(m.blocks) > 0:
        strategy, keys, keys_text = "full", {}, f"{keys_text}: every block, so full"
    choice = f"{domain} domain with {size} data -> {strategy}{f' ({keys_text})' if keys_text else ''}"
    reason = f"{size_text}; {domain_text}; {choice}"
    warning = unsuitable_warning(m, auto, strategy) if domain == "different" and small else None
    shared = {k: v for k, v in auto.shared_keys().items() if v != getattr(FinetuneStrategy, k)}
    return Advice(strategy, keys, domain, size, reason, m, warning, shared)


def unsuitable_warning(m: Measurements, auto: Auto, strategy: str,
                       chosen_by: str = "finetune.different_small's choice") -> str:
    """The different/small cell's warning: transfer is unsuitable, and what to do instead;
    ``strategy`` is what the run trains and ``chosen_by`` why."""
    runs = "this run does" if strategy == "scratch" else f"this run trains {strategy}, {chosen_by}"
    return (
        f"transfer is unsuitable here: the target differs from the pretraining data and has only "
        f"{m.samples_per_class:.0f} labels per class, where every fine-tuning strategy does poorly. Instead: "
        f"train from scratch ({runs}), collect more labels (>= {auto.large_from} per class moves the run to "
        f"the large cell), or, with unlabelled target images, domain adaptation: `{DA_COMMAND}` "
        f"(digits -> digits_m), for your own images `{DA_OWN_DATA}`"
    )


def _domain(m: Measurements, auto: Auto) -> tuple[str, str]:
    """``similar`` or ``different``, and the sentence that says why."""
    rel = m.probe_above_chance
    probe_poor = rel is not None and rel < auto.probe_threshold
    probe_text = "" if rel is None else (
        f"linear probe {m.probe_acc:.3f} on frozen features (chance {m.chance:.3f}; {rel:.2f} of the way "
        f"from chance to perfect, {'<' if probe_poor else '>='} probe_threshold={auto.probe_threshold})"
    )
    if m.overall_shift is None:
        if rel is None:
            return "similar", "nothing measurable (no BatchNorm, no probe): assumed similar"
        return ("different" if probe_poor else "similar"), f"no BatchNorm statistics to compare, so the {probe_text} decides"
    shifted = m.overall_shift >= auto.shift_threshold
    shift_text = (f"BatchNorm shift {m.overall_shift:.3f} "
                  f"({'>=' if shifted else '<'} shift_threshold={auto.shift_threshold})")
    if rel is None:
        return ("different" if shifted else "similar"), f"{shift_text} decides (no probe)"
    if shifted and probe_poor:
        return "different", f"{shift_text} and {probe_text}: both say the domain differs"
    if not shifted and not probe_poor:
        return "similar", f"{shift_text} and {probe_text}: both say the domain is similar"
    if shifted:
        why = "the statistics moved, but the frozen features still separate the classes"
    else:
        why = "the statistics match, but the frozen features do not separate these classes"
    return "similar", f"{shift_text} but {probe_text}: {why}, so the domain counts as similar"


def keys_for(strategy: str, m: Measurements, auto: Auto, max_epochs: int) -> tuple[dict[str, Any], str]:
    """The chosen strategy's keys from where the shift is, and the sentence that says why."""
    n = len(m.blocks)
    shifted = [i for i, s in enumerate(m.block_shift) if s is not None and s >= auto.shift_threshold]
    depth = n - shifted[0] if shifted else None
    where = (f"the shift first reaches {auto.shift_threshold} in block {m.blocks[shifted[0]]}" if shifted
             else f"no block's shift reaches {auto.shift_threshold}")
    if strategy == "partial":
        return {"n_blocks": depth or 1}, f"n_blocks={depth or 1}: {where}"
    if strategy == "gradual":
        depth = depth or max(n, 1)
        every = max(1, max_epochs // (depth + 1))
        return {"unfreeze_every": every}, f"unfreeze_every={every}: {depth} block(s) thaw within {max_epochs} epochs; {where}"
    if strategy == "scratch" and m.pretrained:
        keys = {"steps_mult": auto.scratch_steps_mult, "lr_mult": auto.scratch_lr_mult}
        return keys, f"steps_mult={auto.scratch_steps_mult:g}: random weights get {auto.scratch_steps_mult:g}x the budget"
    if strategy == "lp_ft":
        probe = max(1, max_epochs // 4)
        return {"probe_epochs": probe}, f"probe_epochs={probe}: a quarter of {max_epochs} epochs"
    return {}, ""
