"""Checkpoint files read safely and checked before any work starts.

:func:`read_checkpoint` opens a ``ckpt_path`` tensors-only (``weights_only=True``: no code from the
file runs) and turns every way it can be wrong into one :class:`CheckpointError` that says what the
file is and what to do: pickled code, a truncated or corrupt file, text, a ``.safetensors`` file
(weights, not a training checkpoint), or a checkpoint of another architecture
(:func:`check_matches`, called before the Trainer exists, so nothing is written into the run dir).

The writers (:mod:`experiments.checkpoints.writing`) refuse non-finite weights with
:func:`refuse_non_finite`, so ``last.ckpt`` and the best always hold the last finite epoch. Tensors that have not changed since
training started are written once per run, into a frozen file beside the checkpoints, and every
reader here restores them (hash checked): :mod:`experiments.checkpoints.frozen` says why and how.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from experiments.checkpoints.frozen import restore_frozen
from experiments.errors import CheckpointError, TrainingError

log = logging.getLogger(__name__)

#: the keys every Lightning training checkpoint has
LIGHTNING_KEYS = ("state_dict", "epoch", "global_step")


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint at ``path``, memory-mapped (cheap even for large files), its frozen tensors
    restored (:func:`~experiments.checkpoints.frozen.restore_frozen`), or a CheckpointError."""
    path = Path(path)
    shown = f"{key}={str(path)!r}"
    if path.suffix == ".safetensors":
        raise CheckpointError(
            f"{shown} is a safetensors file: it holds weights, not a training checkpoint (optimizer, "
            "epoch); to start from these weights use model.weights=PATH instead"
        )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its directory is at the end
        raise CheckpointError(
            f"{shown} is not a complete PyTorch checkpoint: truncated (an interrupted copy or a full "
            "disk) or another kind of file; give a .ckpt from a run's checkpoints/ folder (last.ckpt or the best)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        blocked = [line for line in str(err).splitlines() if "GLOBAL" in line]
        raise CheckpointError(
            f"{shown} was refused: it holds Python objects other than tensors, which would run code "
            "when loaded. Only load checkpoints written by this framework (or re-save the tensors "
            "with torch.save(state_dict))" + (f" ({blocked[0].strip()})" if blocked else "")
        ) from err
    except Exception as err:  # a damaged archive: torch.load's own errors say little
        raise CheckpointError(
            f"{shown} is corrupt ({type(err).__name__}: {str(err).splitlines()[0]}); give another "
            ".ckpt from a run's checkpoints/ folder (last.ckpt or the best)"
        ) from err
    missing = [k for k in LIGHTNING_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{shown} is not a Lightning training checkpoint (no {', '.join(missing)}); for a plain "
            "state dict of weights use model.weights=PATH"
        )
    return restore_frozen(state, path.parent, shown)


def check_matches(checkpoint: dict[str, Any], module: torch.nn.Module, path: str | os.PathLike,
                  model_name: str) -> None:
    """CheckpointError when the checkpoint's tensors do not fit ``module`` (another architecture or
    another number of classes), naming a few differing tensors and the likely fix."""
    saved = checkpoint["state_dict"]
    own = module.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    clashes = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
               if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or clashes):
        return
    details = []
    if clashes:
        details.append(f"{len(clashes)} shapes differ (e.g. {'; '.join(clashes[:2])})")
    if missing:
        details.append(f"{len(missing)} tensors missing (e.g. {missing[:2]})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    if not clashes and all(k.startswith("adapt.") for k in missing + unexpected):
        written_with = _adapt_method_of(path)
        fix = (f"written with adapt={written_with}: give adapt={written_with}" if written_with else
               "written with another adapt= method: give that one (its run's results.json, beside checkpoints/, "
               "names it under adapt.method)")
        raise CheckpointError(f"ckpt_path={str(path)!r} does not fit this run's adaptation method: "
                              f"{', '.join(details)}. The model fits; the checkpoint was {fix}")
    raise CheckpointError(
        f"ckpt_path={str(path)!r} does not fit model {model_name}: {', '.join(details)}. It was "
        "written by another architecture or data set: drop the model=/data= overrides so the run's "
        "saved config (.hydra/config.yaml beside checkpoints/) rebuilds the same model"
    )


def _adapt_method_of(path: str | os.PathLike) -> str | None:
    """The adapt= method of the run that wrote the checkpoint, from its results.json (the run dir
    holds ``checkpoints/``), or None when that record is not there."""
    import json

    record = Path(path).resolve().parent.parent / "results.json"
    try:
        return json.loads(record.read_text())["adapt"]["method"]
    except (OSError, ValueError, KeyError, TypeError):  # no record, or one of a run without adapt=
        return None


def checkpoint_progress(path: str | os.PathLike) -> dict[str, int] | None:
    """``{"epoch": finished epochs, "step": global step}`` of a readable checkpoint, else None."""
    try:
        state = read_checkpoint(path)
    except CheckpointError:
        return None
    # saved at an epoch's end, before Lightning counts the epoch as completed: "processed" counts it
    progress = state.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    finished = progress.get("processed", state["epoch"] + 1)
    return {"epoch": int(finished), "step": int(state["global_step"])}


def non_finite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold a NaN or an infinity (one
    device sync for all of them)."""
    floats = [(k, v) for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([v.isfinite().all() for _, v in floats]).cpu()
    return [k for (k, _), ok in zip(floats, finite.tolist()) if not ok]


def refuse_non_finite(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """TrainingError instead of writing a checkpoint whose weights are not finite: the file at
    ``path`` keeps the last finite epoch (what a resume, a transfer or a published link needs)."""
    bad = non_finite_tensors(checkpoint.get("state_dict", {}))
    if not bad:
        return
    groups = [g for opt in checkpoint.get("optimizer_states", []) for g in opt.get("param_groups", [])]
    lrs = [lr for g in groups if (lr := g.get("initial_lr", g.get("lr"))) is not None]
    now = f" (now {max(lrs):g})" if lrs else ""  # the largest group's: optimizer.lr (a backbone's is a fraction)
    raise TrainingError(
        f"the model's weights became non-finite (NaN or infinite: {len(bad)} tensors, e.g. {bad[:2]}) in epoch "
        f"{checkpoint.get('epoch', '?')} (by step {checkpoint.get('global_step', '?')}); lower optimizer.lr{now} or "
        f"set trainer.gradient_clip_val=1.0. That epoch was not saved: {path} keeps the last finite "
        "epoch, if one finished"
    )
