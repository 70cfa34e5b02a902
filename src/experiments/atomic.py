"""Files written whole or not at all: a temporary file beside the target, fsynced, then renamed.

Every file a command leaves behind (checkpoints, ``results.json``, ``predictions.csv``, exports,
sweep summaries) is written this way, so a full disk, a kill or an exception never leaves a
truncated file under the final name, and a previous file there survives the failure. A write that
fails on a full disk or an unwritable folder is one :class:`~experiments.errors.OutputError` (or
the caller's error type) that names the file and the fix.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.errors import ExperimentError, OutputError

#: errno values of a full disk: no space, a quota, a file-size limit
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def temporary_beside(path: Path) -> Path:
    """A hidden temporary name in ``path``'s folder, unique to this process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def output_error(err: OSError, path: Path, what: str, kept: str = "", fix: str = "run the command again",
                 error: type[ExperimentError] = OutputError) -> ExperimentError:
    """The one-paragraph error of a failed write of ``what`` at ``path``: what was kept (default:
    nothing partial under that name) and the fix."""
    kept = kept or f"no partial {what} was left under that name"
    if err.errno in DISK_FULL:
        return error(f"the disk is full (no space left): writing {path} failed ({err.strerror}); {kept}. "
                     f"Free space on {path.parent} and {fix}")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return error(f"cannot write {what} {path}: {err.strerror} (a read-only folder, or not yours); {kept}. "
                     "Choose a writable place (hydra.run.dir=DIR or paths.output_root=DIR)")
    return error(f"cannot write {what} {path}: {type(err).__name__}: {err}; {kept}")


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def atomic_output(path: str | os.PathLike, what: str, kept: str = "", fix: str = "run the command again",
                  error: type[ExperimentError] = OutputError) -> Iterator[Path]:
    """Yields a temporary path to create ``path``'s content in; on success it is fsynced and renamed
    onto ``path`` (the commit point), on any failure it is removed. An OSError becomes ``error``
    (:func:`output_error`: ``what``, what was ``kept``, the ``fix``)."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise output_error(err, path, what, kept, fix, error) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
