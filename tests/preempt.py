"""A preemption inside a test's own process: ``+callbacks.preempt._target_=preempt.SigtermAtEpoch``
sends SIGTERM as the given epoch starts (the epochs before it finished and checkpointed), as a
scheduler would, without a second interpreter."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class SigtermAtEpoch(Callback):
    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)
