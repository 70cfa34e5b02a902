"""The config ``python run.py <overrides>`` would run, composed in-process (tests and benchmarks),
and one option of a group composed alone (``finetune=auto``'s candidates).

One helper for both, so a test and a benchmark can never compose a run differently from the
command line: Hydra's compose API over the repository's ``conf/`` with the run dir set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

#: the repository's config folder (``run.py``'s ``config_path``)
CONF = Path(__file__).resolve().parents[3] / "conf"


def compose_config(run_dir: Path | str, *overrides: str, conf_dir: Path = CONF) -> DictConfig:
    """The composed (unresolved) config of ``run.py`` with ``paths.run_dir=run_dir`` and ``overrides``."""
    from hydra import compose, initialize_config_dir

    from experiments.config.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("run", overrides=[f"paths.run_dir={run_dir}", *overrides])


def compose_option(group: str, name: str, searchpath: Sequence[str] = ()) -> DictConfig:
    """The option ``group=name`` alone, as Hydra composes it from the repository's ``conf/`` and
    the folders of ``searchpath`` (``hydra.searchpath``'s entries, e.g. ``file:///my/conf``).

    Inside a running job (``@hydra.main``) Hydra's own config loader composes it; elsewhere (tests,
    benchmarks) one over :data:`CONF`. ConfigError when no folder has the option, naming those
    that exist.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    from experiments.errors import ConfigError

    overrides = [f"+{group}={name}", *([f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else [])]
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(overrides=overrides)[group]
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose(overrides=overrides)[group]
    except MissingConfigException as err:
        options = ", ".join(err.options or []) if getattr(err, "options", None) else "see conf/" + group
        raise ConfigError(f"{group}={name} has no {group}/{name}.yaml in the config search path (options: {options}); "
                          "add the yaml to conf/ or to a folder of hydra.searchpath") from err
