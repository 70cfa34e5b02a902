"""Where a study lives: ``hydra.sweeper.storage`` as an Optuna storage.

* ``null``: in memory, this process only (one worker; lost when the sweep ends);
* an SQLAlchemy URL (``sqlite:///outputs/optuna.db``, ``postgresql://user:pw@host/db``,
  ``mysql+pymysql://...``): Optuna's RDB storage; with ``heartbeat_interval`` a trial whose worker
  stopped beating is failed and run again by another worker;
* ``journal://PATH`` (``journal:///abs/study.log``, ``journal://outputs/study.log``): an append-only
  log file (``JournalFileBackend``) that workers on one machine or a shared file system write to,
  with no database to set up; no heartbeat.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.errors import ConfigError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

JOURNAL_SCHEME = "journal://"


def open_storage(url: str | None, heartbeat_interval: int | None = None, max_retries: int = 1) -> BaseStorage | None:
    """The storage of ``url`` (None: Optuna's in-memory default). ``heartbeat_interval`` seconds
    (RDB only) turn on heartbeats: a trial silent for ``2 x interval`` is failed and queued again,
    at most ``max_retries`` times. ConfigError for a heartbeat on a storage that has none."""
    if heartbeat_interval is not None and (not isinstance(heartbeat_interval, int) or heartbeat_interval < 1):
        raise ConfigError(f"hydra.sweeper.heartbeat_interval={heartbeat_interval!r} is invalid: "
                          "expected null or a whole number of seconds >= 1")
    if url is None or str(url).strip() == "":
        _refuse_heartbeat(heartbeat_interval, "the in-memory storage (storage=null)")
        return None
    url = str(url)
    if url.startswith(JOURNAL_SCHEME):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        _refuse_heartbeat(heartbeat_interval, f"a journal storage ({url})")
        path = Path(url[len(JOURNAL_SCHEME):])
        if not path.name:
            raise ConfigError(f"hydra.sweeper.storage={url}: no file named; use journal:///abs/path/study.log "
                              "or journal://relative/study.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(f"hydra.sweeper.storage={url} is not a storage URL: use null, sqlite:///file.db, "
                          "postgresql://user:password@host/database or journal:///path/study.log")
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if heartbeat_interval is None:
        return _rdb_storage(RDBStorage, url)
    with experimental_ok():
        return _rdb_storage(RDBStorage, url, heartbeat_interval=heartbeat_interval, grace_period=2 * heartbeat_interval,
                            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retries))


def _rdb_storage(storage_class, url: str, attempts: int = 5, **kwargs):
    """Optuna's RDB storage, whose first opening creates the schema. Workers started together on a
    fresh database race to create it, and the loser's ``CREATE`` fails on what the winner just made
    (PostgreSQL: a unique violation on the type catalogue): it opens again, finding the schema there."""
    import random
    import time

    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            return storage_class(url, **kwargs)
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))  # out of step with the other workers
    raise AssertionError("unreachable")


@contextmanager
def experimental_ok() -> Iterator[None]:
    """No warning for Optuna's heartbeats, retries and matplotlib plots: marked experimental since
    Optuna 2 and 3, they are what a shared study runs on (``optuna>=4.9`` is the tested range)."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


def _refuse_heartbeat(heartbeat_interval: int | None, storage: str) -> None:
    if heartbeat_interval is not None:
        raise ConfigError(f"hydra.sweeper.heartbeat_interval={heartbeat_interval} needs a database storage, and "
                          f"{storage} has no heartbeat: set hydra.sweeper.storage=sqlite:///... or "
                          "postgresql://..., or hydra.sweeper.heartbeat_interval=null")
