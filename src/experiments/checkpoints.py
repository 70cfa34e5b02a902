"""Checkpoint files: checked before any work starts, and written so that a crash never truncates one.

:func:`read_checkpoint` opens a ``ckpt_path`` tensors-only (``weights_only=True``: no code from the
file runs) and turns every way it can be wrong into one :class:`CheckpointError` that says what the
file is and what to do: pickled code, a truncated or corrupt file, text, a ``.safetensors`` file
(weights, not a training checkpoint), or a checkpoint of another architecture
(:func:`check_matches`, called before the Trainer exists, so nothing is written into the run dir).

:class:`AtomicCheckpointIO` is the Trainer's checkpoint writer: temporary file in the same folder,
fsync, rename. A full disk or a kill mid-write leaves the previous good file and says where; a
model whose weights became NaN or infinite is never written (:func:`non_finite_tensors`), so
``last.ckpt`` and the best always hold the last finite epoch. Tensors that have not changed since
training started are written once per run, into a frozen file beside the checkpoints, and every
reader here restores them (hash checked): :mod:`experiments.frozen_tensors` says why and how.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import shutil
import threading
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from experiments.errors import CheckpointError, TrainingError
from experiments.frozen_tensors import REFERENCE_KEY, UNCHANGED_KEY, frozen_file, reference, restore_frozen

log = logging.getLogger(__name__)

#: the keys every Lightning training checkpoint has
LIGHTNING_KEYS = ("state_dict", "epoch", "global_step")


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint at ``path``, memory-mapped (cheap even for large files), its frozen tensors
    restored (:func:`~experiments.frozen_tensors.restore_frozen`), or a CheckpointError."""
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside the target, fsyncs and renames it, and
    never serialises the same training state twice.

    Lightning's own writer streams straight into the target path, so a full disk or a kill leaves a
    truncated ``last.ckpt`` where the previous good one was; here the rename is the commit point.
    The best checkpoint and ``last.ckpt`` of one epoch hold the same state (same epoch and step):
    the second becomes a hard link to the first (a copy where links are not supported), which a
    later atomic rename of either name leaves intact. Non-finite weights are refused
    (:func:`refuse_non_finite`) before anything is written. Tensors noted as unchanged since the
    start (:class:`~experiments.frozen_tensors.UnchangedTensors`) go once into a frozen file beside
    the checkpoint, which refers to it (:meth:`_refer_frozen`); loading restores them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_written: tuple[tuple[int, int], Path] | None = None
        self._frozen: dict[Path, dict[str, Any]] = {}  # folder -> the reference to its frozen file

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        checkpoint = self._refer_frozen(checkpoint, Path(path))
        refuse_non_finite(checkpoint, path)
        self._write(checkpoint, Path(path))

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's load (resume, validate, test, predict with ``ckpt_path``), frozen tensors restored."""
        state = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return restore_frozen(state, Path(path).parent, f"ckpt_path={str(path)!r}")

    def _refer_frozen(self, checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
        """``checkpoint`` without the tensors unchanged since the start that the folder's frozen file
        holds, plus the reference to that file; the file is written (atomically) at the folder's
        first such save. Finite tensors only: non-finite ones stay in, to be refused."""
        unchanged = checkpoint.get(UNCHANGED_KEY)
        checkpoint = {k: v for k, v in checkpoint.items() if k != UNCHANGED_KEY}
        if not unchanged:
            return checkpoint
        state = checkpoint["state_dict"]
        folder = path.parent
        if folder not in self._frozen:
            tensors = {k: state[k] for k in unchanged}
            if non_finite_tensors(tensors):
                return checkpoint
            name, digest, data = frozen_file(tensors)
            self._commit(folder / name, lambda tmp: _write_synced(tmp, io.BytesIO(data)))
            self._frozen[folder] = reference(name, digest, unchanged)
            log.info("checkpoints: %d tensors unchanged since the start (%.1f MB) written once to %s",
                     len(unchanged), len(data) / 1e6, folder / name)
        ref = self._frozen[folder]
        stored = set(ref["keys"])
        referred = [k for k in unchanged if k in stored]
        if not referred:
            return checkpoint
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in set(referred)}
        checkpoint[REFERENCE_KEY] = {**ref, "keys": referred}
        return checkpoint

    def _write(self, checkpoint: dict[str, Any], path: Path) -> None:
        state = (int(checkpoint.get("epoch", -1)), int(checkpoint.get("global_step", -1)))
        previous = self._last_written
        if previous is not None and previous[0] == state and previous[1] != path and previous[1].is_file():
            self._commit(path, lambda tmp: _link_or_copy(previous[1], tmp))
        else:
            buffer = io.BytesIO()  # serialised first, so a failing write surfaces as the OSError it is
            torch.save(checkpoint, buffer)
            self._commit(path, lambda tmp: _write_synced(tmp, buffer))
        self._last_written = (state, path)

    @staticmethod
    def _commit(path: Path, make: Callable[[Path], None]) -> None:
        """``make(tmp)`` creates the file under a temporary name; the rename publishes it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            make(tmp)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # EFBIG: a file-size limit
                raise CheckpointError(
                    f"the disk is full (no space left): writing {path} failed ({err.strerror}); the previous "
                    f"checkpoint there is kept. Free space on {path.parent} and resume with ckpt_path="
                    f"{path.parent / 'last.ckpt'} (a resume may write elsewhere: paths.output_root=DIR)"
                ) from err
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _write_synced(path: Path, buffer: io.BytesIO) -> None:
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class BackgroundCheckpointIO(AtomicCheckpointIO):
    """:class:`AtomicCheckpointIO` on a background thread: training goes on while a checkpoint is
    serialised and written (``checkpoint.background=true``).

    The training thread only takes a point-in-time copy of the tensors; serialisation, fsync,
    links and removals run in order on one worker thread. Hand-written rather than Lightning's
    ``AsyncCheckpointIO`` because that copies the state again for a save that repeats the previous
    state (the best and ``last.ckpt`` of one epoch). A failed write is raised at the next save or
    when the Trainer tears down, so a run never ends ``ok`` with a checkpoint missing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._executor: ThreadPoolExecutor | None = None
        self._error: BaseException | None = None
        self._submitted_state: tuple[int, int] | None = None

    def _submit(self, fn: Any, *args: Any) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")

        def run() -> None:
            try:
                fn(*args)
            except BaseException as err:  # kept for the training thread
                self._error = err

        self._executor.submit(run)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        checkpoint = self._refer_frozen(checkpoint, Path(path))  # the frozen file: once, on this thread
        state = (int(checkpoint.get("epoch", -1)), int(checkpoint.get("global_step", -1)))
        if state != self._submitted_state:  # a repeat is linked by the worker: no copy needed
            checkpoint = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().clone())
            refuse_non_finite(checkpoint, path)  # on the training thread: the run stops at this epoch
        self._submitted_state = state
        self._submit(self._write, checkpoint, Path(path))

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        self._submit(super().remove_checkpoint, path)

    def teardown(self) -> None:
        """Waits for every pending write; raises the first that failed."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
