"""Entry point: `python run.py [group=option ...] [key=value ...]`; `-m` sweeps.

Only Hydra and the light config layer load before the config is validated, so --help, --cfg and
typos answer fast; torch and Lightning come in after.
"""

import hydra
from omegaconf import DictConfig

from experiments.cli import main as run_main
from experiments.config.resolvers import register_resolvers

register_resolvers()  # the yaml's ${objective_mode:...} and ${swept_name:...}, before Hydra composes


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def main(cfg: DictConfig) -> float | None:
    return run_main(cfg)


if __name__ == "__main__":
    main()
