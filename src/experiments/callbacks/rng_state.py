"""Random-number state in checkpoints, so a resumed run draws what an uninterrupted one would.

Lightning restores weights, optimizer, schedulers and loop counters, not the generators: a resumed
run would reshuffle its data and redraw dropout masks from the re-seeded start. This callback saves
the torch (CPU and CUDA), numpy and Python states with every checkpoint and puts them back when
training resumes from it.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def collect_states() -> dict[str, Any]:
    """Every generator's state as tensors and plain Python values (loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def restore_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class RandomStateCheckpoint(L.Callback):
    """Saves the generators' states in each checkpoint; restores them when a fit resumes from one.

    The states are put back as soon as Lightning hands the checkpoint over, which is before the
    resumed fit builds its first data iterator (that draws the shuffle order); the sanity check in
    between runs under Lightning's ``isolate_rng`` and leaves them untouched. Each process restores
    its own states (under DDP rank 0's are saved; the distributed sampler seeds by epoch anyway).
    """

    def state_dict(self) -> dict[str, Any]:
        return collect_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore_states(state_dict)
