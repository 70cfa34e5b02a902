"""The Trainer's checkpoint writers: a crash, a full disk or a kill never truncates a checkpoint.

:class:`AtomicCheckpointIO` writes to a temporary file beside the target, fsyncs and renames it; a
model whose weights became NaN or infinite is never written
(:func:`~experiments.checkpoints.reading.refuse_non_finite`), so ``last.ckpt`` and the best always
hold the last finite epoch. :class:`BackgroundCheckpointIO` does the same on a worker thread.
Tensors unchanged since training started go once per run into a frozen file
(:mod:`experiments.checkpoints.frozen`).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from experiments.checkpoints.frozen import REFERENCE_KEY, UNCHANGED_KEY, frozen_file, reference, restore_frozen
from experiments.checkpoints.reading import non_finite_tensors, refuse_non_finite
from experiments.atomic import atomic_output
from experiments.errors import CheckpointError, TrainingError

log = logging.getLogger(__name__)

class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside the target, fsyncs and renames it, and
    never serialises the same training state twice.

    Lightning's own writer streams straight into the target path, so a full disk or a kill leaves a
    truncated ``last.ckpt`` where the previous good one was; here the rename is the commit point.
    The best checkpoint and ``last.ckpt`` of one epoch hold the same state (same epoch and step):
    the second becomes a hard link to the first (a copy where links are not supported), which a
    later atomic rename of either name leaves intact. Non-finite weights are refused
    (:func:`refuse_non_finite`) before anything is written. Tensors noted as unchanged since the
    start (:class:`~experiments.checkpoints.frozen.UnchangedTensors`) go once into a frozen file beside
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
        fix = (f"resume with ckpt_path={path.parent / 'last.ckpt'} (a resume may write elsewhere: "
               "paths.output_root=DIR)")
        with atomic_output(path, "the checkpoint", "the previous checkpoint there is kept", fix, CheckpointError) as tmp:
            make(tmp)


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
