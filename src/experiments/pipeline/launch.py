"""Launches that would run wrongly, refused before anything is built."""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from experiments.errors import ConfigError

#: trainer=ddp's strategy (experiments.pipeline.ddp), named here so the check imports no torch
SWEEP_SAFE_DDP = "experiments.pipeline.ddp.JobDDPStrategy"


def strategy_name(cfg: DictConfig) -> str:
    """``trainer.strategy`` as a name: Lightning's string (``ddp``, ``auto``) or a node's ``_target_``."""
    node = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    return str(node.get("_target_", node)) if isinstance(node, DictConfig) else str(node)


def check_launch(cfg: DictConfig, multirun: bool) -> None:
    """Refuse Lightning's own DDP inside a local sweep (its extra processes re-run the command
    line, which would start the whole sweep again in each of them; ``trainer=ddp`` runs each job's
    processes alone), ``ddp_spawn`` (its results come back from a spawned process without the
    state the record needs), and a GPU trainer on a machine without one (the only check that
    imports torch)."""
    strategy = strategy_name(cfg)
    if "spawn" in strategy.lower():
        raise ConfigError(
            f"trainer.strategy={strategy} is not supported: the spawned processes' metrics and epoch "
            "count do not reach the results record; use trainer=ddp (trainer.strategy=ddp)"
        )
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if accelerator in ("gpu", "cuda") and cfg.mode in ("train", "test", "predict"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator} but this machine has no CUDA GPU that torch "
                f"{torch.__version__} can use: use trainer=cpu (python run.py mode=env explains why)"
            )
    if multirun and "ddp" in strategy.lower() and strategy != SWEEP_SAFE_DDP and "SLURM_JOB_ID" not in os.environ:
        raise ConfigError(
            f"trainer.strategy={strategy} in a multirun: Lightning's DDP starts its processes by re-running "
            "the command line, which would repeat the sweep; use trainer=ddp (its strategy runs each job's "
            "processes alone), or sweep on a cluster with hydra/launcher=slurm"
        )
