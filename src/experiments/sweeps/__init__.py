"""Hyper-parameter search: the framework's Optuna sweeper (``hparams_search=optuna``).

:mod:`~experiments.sweeps.optuna_sweeper` is the Hydra sweeper (registered by
``hydra_plugins.experiments_sweeper``), :mod:`~experiments.sweeps.study` its ask/tell loop,
:mod:`~experiments.sweeps.search_space` the sweep syntax as Optuna distributions,
:mod:`~experiments.sweeps.storage` the storage URLs, :mod:`~experiments.sweeps.pruning` the
Lightning callback that prunes a job, :mod:`~experiments.sweeps.trials` how a job finds its trial.
"""
