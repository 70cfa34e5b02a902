"""Entry point: `python run.py [group=option ...] [key=value ...]`; `-m` sweeps.

Only Hydra and the light config layer load before the config is validated, so --help, --cfg and
typos answer fast; torch and Lightning come in after.
"""

import hydra
from omegaconf import DictConfig

from experiments.cli import main as run_main


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def main(cfg: DictConfig) -> float | None:
    return run_main(cfg)


if __name__ == "__main__":
    main()
