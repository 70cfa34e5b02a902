"""The config ``python run.py <overrides>`` would run, composed in-process (tests and benchmarks).

One helper for both, so a test and a benchmark can never compose a run differently from the
command line: Hydra's compose API over the repository's ``conf/`` with the run dir set.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

#: the repository's config folder (``run.py``'s ``config_path``)
CONF = Path(__file__).resolve().parents[3] / "conf"


def compose_config(run_dir: Path | str, *overrides: str, conf_dir: Path = CONF) -> DictConfig:
    """The composed (unresolved) config of ``run.py`` with ``paths.run_dir=run_dir`` and ``overrides``."""
    from hydra import compose, initialize_config_dir

    import experiments.config.rules  # noqa: F401  (registers the config resolvers)

    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("run", overrides=[f"paths.run_dir={run_dir}", *overrides])
