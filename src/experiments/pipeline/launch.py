"""Launches that would run wrongly, refused before anything is built."""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from experiments.errors import ConfigError


def check_launch(cfg: DictConfig, multirun: bool) -> None:
    """Refuse DDP inside a local sweep (its extra processes re-run the command line, which would
    start the whole sweep again in each of them), ``ddp_spawn`` (its results come back from a
    spawned process without the state the record needs), and a GPU trainer on a machine without
    one (the only check that imports torch)."""
    strategy = str(OmegaConf.select(cfg, "trainer.strategy", default="auto"))
    if "spawn" in strategy:
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
    if multirun and strategy.startswith("ddp") and "SLURM_JOB_ID" not in os.environ:
        raise ConfigError(
            f"trainer.strategy={strategy} in a multirun: DDP starts its processes by re-running the "
            "command line, which would repeat the sweep; run DDP jobs one at a time (without -m), "
            "or sweep on a cluster with hydra/launcher=slurm"
        )
