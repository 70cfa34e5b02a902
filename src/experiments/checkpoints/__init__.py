"""Checkpoints: read tensors-only and checked against the model (``reading``), written atomically or
on a worker thread (``writing``), frozen tensors written once per run and referenced by hash
(``frozen``)."""

from experiments.checkpoints.reading import (
    LIGHTNING_KEYS,
    check_matches,
    checkpoint_progress,
    non_finite_tensors,
    read_checkpoint,
    refuse_non_finite,
)
from experiments.checkpoints.writing import AtomicCheckpointIO, BackgroundCheckpointIO

__all__ = ["LIGHTNING_KEYS", "AtomicCheckpointIO", "BackgroundCheckpointIO", "check_matches", "checkpoint_progress",
           "non_finite_tensors", "read_checkpoint", "refuse_non_finite"]
