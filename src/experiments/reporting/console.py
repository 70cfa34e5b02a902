"""What the console shows: each line once, without the libraries' adverts and expected notices.

``lightning/__init__.py`` adds its own console handler (``INFO: ...``) when it is imported, so
every Lightning line printed twice beside Hydra's job log; :func:`quiet_lightning` imports it,
removes those handlers (its records then reach Hydra's console and ``run.log`` once) and drops
the lines that are noise in this framework's runs, each for a stated reason.
"""

from __future__ import annotations

import logging

#: Lightning messages (by their start) that say nothing a user of this framework can act on
QUIET_PREFIXES = (
    "💡 Tip:",  # an advert for another product, twice per Trainer
    "Trainer already configured with model summary callbacks",  # ours is the rich summary, on purpose
    "The following callbacks returned in `LightningModule.configure_callbacks` will override",  # the module
    # brings its FinetuneCallback by design (what trains is the module's to say)
    "Loading `train_dataloader` to estimate number of stepping batches",  # an internal step, not news
)


class _DropNoise(logging.Filter):
    """Drops :data:`QUIET_PREFIXES`, and an INFO line said before in this process: a run builds
    several Trainers (feature caching, the head fit, the fit), each with the same device banner, and
    validation and test each announce the same best checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.getMessage())
        if message.startswith(QUIET_PREFIXES):
            return False
        if record.levelno == logging.INFO:
            if message in self.said:
                return False
            self.said.add(message)
        return True


_NOISE = _DropNoise()


def quiet_lightning() -> None:
    """Import Lightning's logging set-up now (once torch is due anyway) and route it through the
    root (Hydra's) handlers alone, without the noise of :data:`QUIET_PREFIXES`."""
    import warnings

    import lightning  # noqa: F401  (its import adds the handler that doubles every line)

    # Lightning's own use of a torch API that torch deprecated: nothing for a user to change
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # frozen blocks are in eval mode on purpose; the model summary says so (reporting.model_summary)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        if _NOISE not in logger.filters:
            logger.addFilter(_NOISE)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.trainer.connectors.callback_connector"):
        if _NOISE not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_NOISE)
