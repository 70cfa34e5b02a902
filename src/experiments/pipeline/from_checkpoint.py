"""A checkpoint brings its run's config: ``ckpt_path=PATH`` alone rebuilds the same model and data.

A Lightning checkpoint here holds weights and training state, not the model's construction (the
model is built from config). Every run dir keeps its composed config in ``.hydra/config.yaml``
next to ``checkpoints/``, so test, predict and resume load that config and then apply what this
command line overrides. Light: omegaconf and Hydra's override parser only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from experiments.errors import ConfigError
from experiments.pipeline.rundirs import is_finished

log = logging.getLogger(__name__)

#: always taken from this command's composition: what to do (and its options), from where, and
#: where paths point
_FROM_COMMAND = ("mode", "ckpt_path", "paths", "predict", "export")


def uses_checkpoint(cfg: DictConfig) -> bool:
    """Test, predict and export always do; training does when it resumes (``ckpt_path`` given)."""
    return cfg.mode in ("test", "predict", "export") or (cfg.mode == "train" and bool(cfg.get("ckpt_path")))


def checkpoint_file(cfg: DictConfig) -> Path:
    """``cfg.ckpt_path`` as an existing file, or a ConfigError that says how to find one."""
    raw = cfg.get("ckpt_path")
    if not raw:
        raise ConfigError(
            f"mode={cfg.mode} needs ckpt_path=PATH: a Lightning checkpoint such as "
            "outputs/runs/<run>/checkpoints/last.ckpt"
        )
    path = Path(str(raw)).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={raw!r}: no such file; runs keep theirs in <run dir>/checkpoints/")
    return path


def saved_config_path(ckpt: Path) -> Path:
    """``<run>/.hydra/config.yaml`` for ``<run>/checkpoints/<name>.ckpt``."""
    return ckpt.resolve().parent.parent / ".hydra" / "config.yaml"


def config_for_checkpoint(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, Path | None]:
    """The config to run ``cfg.ckpt_path`` with, and the saved config it came from (None: none found).

    The checkpoint's saved config, then every key (or whole group) this command line overrides,
    copied from the composed ``cfg``; ``mode``, ``ckpt_path`` and ``paths`` always come from ``cfg``.
    Resuming (``mode=train``) an unfinished run (interrupted, failed) continues in the
    checkpoint's run dir: its checkpoints, TensorBoard run and results.json. A finished run is
    never rewritten (:mod:`experiments.pipeline.rundirs`): training on from its checkpoint (more epochs)
    happens in this command's own run dir.
    """
    ckpt = checkpoint_file(cfg)
    saved_path = saved_config_path(ckpt)
    if not saved_path.is_file():
        log.info("no %s next to the checkpoint: using this command's config", saved_path)
        return cfg, None
    effective = OmegaConf.load(saved_path)
    OmegaConf.set_struct(effective, False)
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)]
    if "adapt" in keys and OmegaConf.select(effective, "adapt", default=None) is None and cfg.get("adapt"):
        raise ConfigError(
            f"adapt={OmegaConf.select(cfg, 'adapt.name', default='...')} with ckpt_path={ckpt}: that checkpoint is of "
            f"a classification run ({saved_path} has no adapt=), and a checkpoint continues the run it came from. "
            f"To adapt from its weights start a new run: drop ckpt_path= and give model.weights={ckpt} "
            "(with data=da_pair or data=da_folders)"
        )
    if cfg.mode == "train":
        _refuse_restored_changes(cfg, effective, keys, ckpt)
    for key in dict.fromkeys([*_FROM_COMMAND, *keys]):
        if key.startswith("hydra.") or key == "hydra":
            continue
        missing = object()
        value = OmegaConf.select(cfg, key, default=missing)
        if value is missing:  # a deletion (~key) or a key this composition does not have
            _delete(effective, key)
        else:
            OmegaConf.update(effective, key, value, merge=False, force_add=True)
    source_run = ckpt.resolve().parent.parent
    if cfg.mode == "train" and is_finished(source_run):
        log.info("%s is a finished run's: it is only read, and training goes on in this run's dir", ckpt)
    elif cfg.mode == "train":
        effective.paths.run_dir = str(source_run)
        log.info("resuming %s in its run dir %s", ckpt, effective.paths.run_dir)
    else:
        log.info("config of %s: %s, with this command's overrides", ckpt, saved_path)
    OmegaConf.set_struct(effective, True)
    return effective, saved_path


#: what a resume restores from the checkpoint itself, so a new value on the command line would be ignored
_RESTORED = ("optimizer", "scheduler")


def _refuse_restored_changes(cfg: DictConfig, saved: DictConfig, keys: list[str], ckpt: Path) -> None:
    """A resume continues the checkpoint's optimizer state and schedule (its learning rates
    included): refuse an override of them that differs from the run's, instead of ignoring it."""
    for key in keys:
        if key.split(".")[0] not in _RESTORED:
            continue
        new, old = OmegaConf.select(cfg, key, default=None), OmegaConf.select(saved, key, default=None)
        if OmegaConf.is_config(new) or OmegaConf.is_config(old):  # a whole group: compare what it makes
            new = OmegaConf.to_container(new, resolve=True) if OmegaConf.is_config(new) else new
            old = OmegaConf.to_container(old, resolve=True) if OmegaConf.is_config(old) else old
        if new != old:
            raise ConfigError(
                f"{key}={new} differs from the run that wrote {ckpt} ({key}={old}): a resume restores the optimizer and "
                f"its schedule from the checkpoint, learning rates included, so the new value would be ignored. Resume "
                f"without it, or start a new run from these weights: drop ckpt_path= and give model.weights={ckpt}"
            )


def _delete(cfg: DictConfig, key: str) -> None:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if isinstance(parent, DictConfig) and leaf in parent:
        del parent[leaf]
