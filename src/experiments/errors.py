"""Error types of the framework: one family per kind of mistake.

Every message names the offending key or value and says how to fix it. `run.py` prints these
as one paragraph (no traceback unless HYDRA_FULL_ERROR=1) and exits non-zero.
"""

from __future__ import annotations


class ExperimentError(Exception):
    """Base class of every error this framework raises on purpose."""


class ConfigError(ExperimentError, ValueError):
    """A config value is missing, out of range or inconsistent with another one."""


class ModelError(ExperimentError):
    """A model name, family or head layout cannot be built."""


class WeightsError(ExperimentError):
    """Weights cannot be found, downloaded or matched to the model."""


class DataError(ExperimentError):
    """A dataset is missing, empty or breaks the Dataset contract."""


class FinetuneError(ExperimentError, ValueError):
    """A fine-tuning strategy does not fit the model (e.g. more blocks asked than it has)."""


class TrainingError(ExperimentError):
    """Training went wrong in a way the user can fix (a loss that became NaN or infinite)."""


class CheckpointError(ExperimentError):
    """A checkpoint cannot be read, is refused (it would run code), does not fit the model, or
    cannot be written (a full disk)."""


class OutputError(ExperimentError):
    """A file a command writes (predictions, an export, a summary, results.json) cannot be written:
    a full disk, a read-only or missing folder."""
