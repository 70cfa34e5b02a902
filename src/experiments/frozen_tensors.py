"""Checkpoints that do not rewrite what never trains: frozen tensors are written once per run.

While a block is frozen (its BatchNorm statistics too) its tensors are the very tensors the run
started from, so writing them into every epoch's checkpoint (45 MB for resnet18, of which a
classifier_only run trains 5,130 numbers) repeats the same bytes. The design:

- **What counts as frozen is observed, bit for bit.** :class:`UnchangedTensors` (a callback)
  keeps, when training starts, a copy of the tensors that no optimizer will train then (parameters
  without gradients, and the buffers: BatchNorm statistics, an EMA teacher), on their device; at
  each save it lists those still equal to their copy (one comparison per tensor, one device sync
  for all) and forgets the ones that changed (a block that thawed). This holds for every strategy,
  domain-adaptation method and BatchNorm mode without asking any of them. Cheaper signals were
  tried and refused: the in-place version counter misses BatchNorm's running statistics and fused
  optimizers (their kernels write without bumping it), and ``requires_grad`` misses an EMA teacher
  and BatchNorm statistics of trained blocks. The cost is one copy of the frozen tensors in memory
  and a comparison per save (a few milliseconds for resnet18 on a CPU).
- **The frozen tensors go into one file per run, in the run's own folder**:
  ``checkpoints/frozen-<sha256 prefix>.safetensors``, written atomically at the first save of a
  run by the checkpoint writer (``checkpoints.AtomicCheckpointIO``), named by its content. Each
  checkpoint then holds the tensors that changed, its optimizer and loop state, and a reference
  ``frozen_reference = {file, sha256, keys}``. A reference to the original weights file or a
  package's cache was rejected: those can be deleted, moved or re-downloaded with other bytes,
  and a run dir must stay complete on its own (copy ``checkpoints/`` whole and it loads).
- **Loading restores the full model and checks the hash first** (:func:`restore_frozen`):
  resume, ``mode=test``, ``predict``, ``export`` and ``model.weights=`` all read checkpoints
  through it, and a frozen file that is missing, changed or short of a key is a CheckpointError
  naming the file and the fix; nothing half-loads.
- Only worth it when it saves something: under :data:`MIN_FROZEN_BYTES` of unchanged tensors a
  checkpoint stays one self-contained file (a small model trained in full has none).
  ``checkpoint.reference_frozen=false`` writes every tensor into every checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning as L
import torch

from experiments.errors import CheckpointError

#: the checkpoint key of the list of state-dict keys unchanged since training started (the callback's note)
UNCHANGED_KEY = "unchanged_since_start"
#: the checkpoint key of the reference to the frozen file (the writer's)
REFERENCE_KEY = "frozen_reference"
#: below this many bytes of unchanged tensors a checkpoint keeps them inline: one file is simpler
MIN_FROZEN_BYTES = 1 << 20


class UnchangedTensors(L.Callback):
    """Notes in each checkpoint (``unchanged_since_start``) the state-dict keys whose tensors are
    bit for bit those training started with, when they add up to at least :data:`MIN_FROZEN_BYTES`.

    The note is a list of names: a writer that does not know it stores the full checkpoint as usual.
    """

    def __init__(self) -> None:
        self._start: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after a resume's weights were restored: a resumed run starts from them
        frozen = {k: v for k, v in pl_module.state_dict(keep_vars=True).items()
                  if isinstance(v, torch.Tensor) and not v.requires_grad}
        enough = sum(v.nbytes for v in frozen.values()) >= MIN_FROZEN_BYTES
        self._start = {k: v.detach().clone() for k, v in frozen.items()} if enough else {}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        keys = [k for k, v in self._start.items() if k in state and state[k].shape == v.shape and state[k].dtype == v.dtype]
        if not keys:
            return
        equal = torch.stack([torch.eq(state[k], self._start[k]).all() for k in keys]).tolist()
        for key, same in zip(keys, equal):
            if not same:  # changed once, never the start again: stop comparing it
                del self._start[key]
        unchanged = [k for k, same in zip(keys, equal) if same]
        if sum(state[k].nbytes for k in unchanged) >= MIN_FROZEN_BYTES:
            checkpoint[UNCHANGED_KEY] = unchanged


def frozen_file(tensors: dict[str, torch.Tensor]) -> tuple[str, str, bytes]:
    """``(file name, sha256, bytes)`` of the safetensors file holding ``tensors`` (copied to the CPU)."""
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()})
    digest = hashlib.sha256(data).hexdigest()
    return f"frozen-{digest[:16]}.safetensors", digest, data


def reference(name: str, digest: str, keys: list[str]) -> dict[str, Any]:
    """The ``frozen_reference`` entry of a checkpoint."""
    return {"file": name, "sha256": digest, "keys": list(keys)}


def restore_frozen(checkpoint: dict[str, Any], folder: str | Path, shown: str) -> dict[str, Any]:
    """``checkpoint`` with its referenced frozen tensors back in its state dict (the file beside it,
    hash checked); unchanged when it holds no reference. CheckpointError when the file is missing,
    differs from the one the checkpoint was written with, or lacks a key. ``shown`` names the
    checkpoint in the message (``ckpt_path='...'``)."""
    ref = checkpoint.get(REFERENCE_KEY) if isinstance(checkpoint, dict) else None
    if ref is None:
        return checkpoint
    path = Path(folder) / str(ref["file"])
    keys = list(ref["keys"])
    if not path.is_file():
        raise CheckpointError(
            f"{shown} keeps {len(keys)} frozen tensors (the weights its run started from) in {path.name} beside "
            f"it, and {path} is missing: copy the run's checkpoints/ folder whole, not one .ckpt file"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != ref["sha256"]:
        raise CheckpointError(
            f"{shown} refers to {path} with sha256 {str(ref['sha256'])[:16]}..., and that file's content differs "
            "(modified, truncated or replaced): its frozen tensors cannot be trusted. Restore the file from "
            "the run's original checkpoints/ folder, or use another checkpoint"
        )
    from safetensors.torch import load

    tensors = load(data)
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise CheckpointError(f"{shown}: {path} lacks {len(missing)} of its frozen tensors (e.g. {missing[:2]})")
    restored = {k: v for k, v in checkpoint.items() if k != REFERENCE_KEY}
    restored["state_dict"] = {**checkpoint["state_dict"], **{k: tensors[k] for k in keys}}
    return restored
