"""``finetune=auto`` resolved before anything is built: measure, decide a prior, confirm it by a race.

:func:`resolve_finetune` is the pipeline's step between validation and building. For a concrete
strategy it returns the config unchanged; for ``finetune=auto``:

1. :func:`experiments.finetune.measure.measure`: labels per class, BatchNorm shift, linear probe
   (training and validation splits only), on the run's data and pretrained model;
2. :func:`experiments.finetune.decide.decide`: the guidance table's cell and its strategy, the
   **prior**, with keys from the measurements and the reason;
3. with ``finetune.confirm=true``, :func:`experiments.finetune.race.race`: the prior against its
   neighbours on the labelled data, budgeted by cost (frozen candidates on cached features first,
   backbone candidates by successive halving within ``finetune.race_budget`` of the run, a second
   seed for a close finish); every trial is built by :func:`~experiments.pipeline.build.build_components` and trained
   by the one :func:`~experiments.pipeline.fit.fit`, exactly as a run naming that strategy;
4. the winner's config is composed from its own ``finetune/<name>.yaml`` through Hydra's search
   path (the job's ``hydra.searchpath`` included) plus the keys auto derived, and replaces
   ``finetune`` in the run's config: the builders never see ``auto``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.finetune.auto import Auto
from experiments.finetune.choice import AutoChoice, strategy_config
from experiments.finetune.decide import decide, keys_for, unsuitable_warning
from experiments.finetune.race import FORWARD_SHARE, Candidate, race
from experiments.finetune.strategies import FinetuneStrategy

log = logging.getLogger(__name__)


def is_auto(finetune_cfg: DictConfig) -> bool:
    """Whether a ``finetune`` config is ``auto``'s (its ``_target_`` is :class:`Auto` or a subclass)."""
    target = get_object(str(finetune_cfg._target_))
    return isinstance(target, type) and issubclass(target, Auto)


def resolve_finetune(cfg: DictConfig, searchpath: Sequence[str] = ()) -> tuple[DictConfig, AutoChoice | None]:
    """``cfg`` itself and None for a concrete strategy; for ``finetune=auto`` a copy of ``cfg``
    whose ``finetune`` is the chosen strategy's config, and the choice (numbers, race, reason)."""
    if not is_auto(cfg.finetune):
        return cfg, None
    choice = choose(cfg, instantiate(cfg.finetune), searchpath)
    chosen = copy.deepcopy(cfg)
    with open_dict(chosen):
        chosen.finetune = choice.config
    return chosen, choice


def choose(cfg: DictConfig, auto: Auto, searchpath: Sequence[str] = ()) -> AutoChoice:
    """The strategy ``finetune=auto`` trains on this run: measured, decided, confirmed."""
    from experiments.finetune.measure import measure
    from experiments.pipeline.budget import steps_per_epoch
    from experiments.pipeline.build import build_data_and_model

    cfg = copy.deepcopy(cfg)  # the step budget resolves max_epochs on this copy
    start = time.perf_counter()
    datamodule, model = build_data_and_model(cfg, auto)
    measured = measure(auto, datamodule, model, cfg.trainer)
    measure_seconds = time.perf_counter() - start
    max_epochs = int(cfg.trainer.max_epochs)
    prior = decide(measured, auto, max_epochs)

    def keys(name: str, epochs: int) -> dict[str, Any]:
        own = prior.keys if name == prior.strategy and epochs == max_epochs else keys_for(name, measured, auto, epochs)[0]
        if name == "partial" and name != prior.strategy and own["n_blocks"] >= len(measured.blocks) > 1:
            own = {"n_blocks": len(measured.blocks) - 1}  # as a neighbour, partial stops short of full
        shared = {} if name == "scratch" else prior.shared_keys
        return {**shared, **own}

    def choice_of(name: str, race_result, why: str) -> AutoChoice:
        final = keys(name, max_epochs)
        node = strategy_config(name, final, searchpath)
        return AutoChoice(prior, instantiate(node), final, race_result, why, measure_seconds, config=node)

    def run_trial(name: str, epochs: int, batches: int, seed: int) -> tuple[float, FinetuneStrategy]:
        node = strategy_config(name, keys(name, epochs), searchpath)
        return trial_score(cfg, node, epochs, batches, seed), instantiate(node, _convert_="all")

    names = list(dict.fromkeys([prior.strategy, *dict(auto.neighbours).get(prior.strategy, [])]))
    if not auto.confirm or not measured.pretrained or len(names) < 2:
        why = ("finetune.confirm=false: the prior trains" if not auto.confirm else
               "random init: nothing to race, scratch trains" if not measured.pretrained else
               f"finetune.neighbours has no alternative to {prior.strategy}")
        choice = choice_of(prior.strategy, None, why)
    else:
        per_epoch = steps_per_epoch(cfg.trainer, datamodule)
        candidates = [candidate(name, keys(name, max_epochs), cfg, datamodule, len(model.blocks), searchpath)
                      for name in names]
        val_size = len(datamodule.val_dataloader().dataset)
        result = race(candidates, run_trial, str(cfg.objective), max_epochs * per_epoch, per_epoch,
                      float(auto.race_budget), val_size)
        choice = choice_of(result.winner, result, race_reason(result, prior.strategy, len(candidates)))
    if prior.warning:
        trained = choice.strategy.name
        choice.warning = prior.warning if trained == prior.strategy else \
            unsuitable_warning(measured, auto, trained, "the race's winner over the prior")
    for line in choice.report(with_warning=False).splitlines():
        log.info(line)
    if choice.warning:
        log.warning("finetune=auto: %s", choice.warning)
    return choice


def candidate(name: str, keys: dict[str, Any], cfg: DictConfig, datamodule, n_blocks: int,
              searchpath: Sequence[str]) -> Candidate:
    """``name`` as the race sees it: frozen when its backbone never trains and the feature cache
    would carry its whole run (then its trial is a feature extraction and a head fit), and its
    budget against the run's (``steps_mult``: scratch's own)."""
    from experiments.finetune.cache import plan_feature_cache

    strategy: FinetuneStrategy = instantiate(strategy_config(name, keys, searchpath))
    max_epochs = int(cfg.trainer.max_epochs)
    plan = plan_feature_cache(strategy, datamodule, max_epochs, n_blocks)
    frozen = plan.used and plan.epochs >= max_epochs
    extraction = (len(datamodule.train_dataloader()) + len(datamodule.val_dataloader())) * FORWARD_SHARE
    return Candidate(name, frozen, float(getattr(strategy, "steps_mult", 1.0)), extraction if frozen else None)


def race_reason(result, prior: str, candidates: int) -> str:
    """Why the race's winner trains: it confirmed the prior, or it overruled it (by how much)."""
    winner = result.winner
    if not result.trials:
        return f"the prior trains without a trial: {result.notes[-1] if result.notes else 'nothing to compare'}"
    if winner == prior:
        return f"the race confirmed the prior ({winner} scored best of {candidates})"
    best = {t.strategy: t.score for t in result.trials if t.rung in (0, 2)}
    if prior not in best:
        return f"the race overruled the prior: {prior} did not reach the final; {winner} won"
    return (f"the race overruled the prior: {winner} {best.get(winner, float('nan')):.4f} against "
            f"{prior} {best[prior]:.4f} ({result.objective})")


def trial_score(cfg: DictConfig, finetune: DictConfig, epochs: int, batches: int, seed: int = 0) -> float:
    """Train the run with ``finetune`` (fresh, seeded with the run's seed + ``seed``, built and
    fitted like the run itself) for ``epochs`` x ``batches`` steps, without the run's loggers,
    checkpoints or reports; the objective on the validation split at the end."""
    from experiments.pipeline.build import build_components
    from experiments.pipeline.fit import fit

    trial = copy.deepcopy(cfg)
    with open_dict(trial):
        trial.finetune = finetune
        if "steps_mult" in trial.finetune:
            trial.finetune.steps_mult = 1.0  # the race sized this trial's steps with it already
        trial.seed = int(cfg.seed) + seed
        trial.train_steps = None
        trial.trainer.max_epochs = epochs
        trial.callbacks, trial.logger = {}, {}
        OmegaConf.update(trial, "checkpoint.reference_frozen", False, force_add=True)
    fitted = fit(trial, build_components(trial), devices=1, strategy="auto", limit_train_batches=batches,
                 check_val_every_n_epoch=epochs, num_sanity_val_steps=0, enable_checkpointing=False,
                 enable_progress_bar=False, enable_model_summary=False)
    return float(fitted.trainer.callback_metrics[str(cfg.objective)])
