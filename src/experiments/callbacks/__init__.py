"""Lightning callbacks of conf/callbacks that are not reports (those live in experiments.reporting)."""

from experiments.callbacks.rng_state import RandomStateCheckpoint

__all__ = ["RandomStateCheckpoint"]
