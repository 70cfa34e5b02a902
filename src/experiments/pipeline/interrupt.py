"""SIGTERM and SIGINT end a run as *interrupted*: a record that says so, and the shell's exit code.

A scheduler preempts a job with SIGTERM, a person with Ctrl-C (SIGINT). Lightning on its own exits 0
after a SIGTERM and 1 after a SIGINT, and neither path reaches the run's record. While a task runs,
:func:`signals_interrupt` turns both into :class:`Interrupted` (a ``KeyboardInterrupt``, so Lightning
runs its ``on_exception`` hooks and tears down as for Ctrl-C); the job wrapper
(:func:`experiments.pipeline.job.run`) then writes
results.json with ``status: interrupted`` and exits with ``128 + signal`` (143, 130).

The resume point is ``last.ckpt``, written atomically at the end of every finished epoch: resuming
from it continues bit-identically (model, optimizer, loops and random states are all in it). The
interrupted epoch is abandoned rather than saved half-way, because a mid-epoch checkpoint cannot
resume the data order exactly. Under SLURM, Lightning's auto-requeue (``SLURMEnvironment``) saves an
``hpc_ckpt`` on the requeue signal and the requeued job resumes from it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM or SIGINT during a task."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


@contextmanager
def signals_interrupt() -> Iterator[list[int]]:
    """Within the block, SIGTERM and SIGINT raise :class:`Interrupted`; yields the signals received
    (so a caller can tell an interruption from Lightning's own ``sys.exit`` after one)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield received
        return

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:  # a second signal while shutting down must not abort the record
            raise Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, interrupt)
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def interrupted_record(signum: int, last: Path) -> dict[str, Any]:
    """The record's fields for a run stopped by ``signum``: where it stopped and how to resume
    from ``last`` (its ``last.ckpt``)."""
    from experiments.checkpoints import checkpoint_progress

    name = signal.Signals(signum).name
    progress = checkpoint_progress(last) if last.is_file() else None
    if progress is None:
        how = "no epoch had finished: run the same command again"
        return {"status": "interrupted", "signal": name, "epochs": 0, "checkpoint": None,
                "error": f"interrupted by {name} before the first epoch finished; {how}", "resume": how}
    resume = f"python run.py ckpt_path={last}"
    return {
        "status": "interrupted",
        "signal": name,
        "epochs": progress["epoch"],
        "global_step": progress["step"],
        "checkpoint": str(last),
        "error": f"interrupted by {name} after {progress['epoch']} finished epoch(s); resume with: {resume}",
        "resume": resume,
    }
