"""Checkpoints that do not rewrite what never trains: frozen tensors are written once per run.

While a block is frozen (its BatchNorm statistics too) its tensors are the very tensors the run
started from, so writing them into every epoch's checkpoint (45 MB for resnet18, of which a
classifier_only run trains 5,130 numbers) repeats the same bytes. The design:

- **What counts as frozen is checked, never assumed from the strategy.** :class:`UnchangedTensors`
  (a callback) takes, when training starts, the tensors that no optimizer trains then:
  *parameters without a gradient*, noted by their storage and in-place version counter, and
  *buffers* (BatchNorm statistics, counters), copied. At each save a parameter counts as unchanged
  while it never had ``requires_grad`` since the start (checked at every epoch start and save) and
  its version counter has not moved (an optimizer only touches parameters with gradients; any
  other in-place write moves the counter); a buffer counts as unchanged while it equals its copy
  bit for bit (one comparison for all, one device sync). A tensor that fails once (a block that
  thawed, statistics that updated, an EMA teacher) is written in full from then on. Buffers are
  compared rather than trusted because BatchNorm's kernels update running statistics without
  moving the counter; parameters are not compared because a copy of a frozen backbone would double
  its memory and the comparison cost ~20 ms a save (resnet18 on a CPU), more than the epoch of a
  cached head. Writing through ``tensor.data`` would bypass the counter; nothing here does.
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
    those training started with, when they add up to at least :data:`MIN_FROZEN_BYTES`.

    The note is a list of names: a writer that does not know it stores the full checkpoint as usual.
    """

    def __init__(self) -> None:
        self._params: dict[str, tuple[torch.nn.Parameter, int, int]] = {}  # key -> (param, storage, version)
        self._buffers: dict[str, torch.Tensor] = {}  # key -> copy at the start

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after a resume's weights were restored: a resumed run starts from them
        state = pl_module.state_dict(keep_vars=True)
        params = {k: v for k, v in state.items() if isinstance(v, torch.nn.Parameter) and not v.requires_grad}
        buffers = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and not isinstance(v, torch.nn.Parameter)}
        if sum(v.nbytes for v in [*params.values(), *buffers.values()]) < MIN_FROZEN_BYTES:
            params, buffers = {}, {}
        self._params = {k: (v, v.data_ptr(), v._version) for k, v in params.items()}
        self._buffers = {k: v.detach().clone() for k, v in buffers.items()}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._drop_trainable()

    def _drop_trainable(self) -> None:
        """A parameter that may have trained is never taken as unchanged again."""
        self._params = {k: entry for k, entry in self._params.items() if not entry[0].requires_grad}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._drop_trainable()
        state = checkpoint.get("state_dict", {})
        self._params = {k: (param, ptr, version) for k, (param, ptr, version) in self._params.items()
                        if k in state and state[k].data_ptr() == ptr and state[k]._version == version}
        keys = [k for k, v in self._buffers.items() if k in state and state[k].shape == v.shape and state[k].dtype == v.dtype]
        equal = torch.stack([torch.eq(state[k], self._buffers[k]).all() for k in keys]).tolist() if keys else []
        self._buffers = {k: self._buffers[k] for k, same in zip(keys, equal) if same}  # changed once: never the start again
        unchanged = [*self._params, *self._buffers]
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
