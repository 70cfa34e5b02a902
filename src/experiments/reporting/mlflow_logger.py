"""``logger=mlflow``: Lightning's ``MLFlowLogger`` with this framework's names, artifacts and outcome.

* The store: ``sqlite:///<output root>/mlflow.db`` unless ``logger.mlflow.tracking_uri`` names a
  team's server; artifacts go to ``<output root>/mlartifacts``. Nothing to start.
* Names: a run is named by its run dir, as TensorBoard names it (``2026-..._small_cnn_full``, a
  sweep job ``0_seed=0``); the experiment is the run dir's parent below the output root
  (``runs``, or ``multiruns/<sweep>``: one experiment per sweep, one run per job).
* Params are the HPARAMS tab's short list (``build.log_config``), metrics are logged per epoch as
  the module logs them; figures and the composed config arrive through :meth:`log_figure` and
  :meth:`log_text` (:mod:`experiments.reporting.sinks`).
* The store is opened when the logger is built, before training, under a file lock beside a local
  store (parallel jobs of a sweep create it once, not twice); a store that cannot be opened (a
  read-only folder, a file that is not a store, an unknown scheme, a server that does not answer
  within ``MLFLOW_HTTP_REQUEST_TIMEOUT`` seconds, default 10, with no retries) is one ConfigError
  naming the URI and the fix.
* When ``results.json`` is written the run gets it as an artifact, the best checkpoint with
  ``log_best_checkpoint=true``, and its status from the record: FINISHED, FAILED, or KILLED for an
  interrupted job (:func:`experiments.pipeline.results.on_record_written`).
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from filelock import FileLock
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure

from experiments.errors import ConfigError
from experiments.pipeline.results import on_record_written

log = logging.getLogger(__name__)


class _Creating(logging.Filter):
    """Drops Lightning's warning that the experiment is about to be created, remembering it was."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "not found. Creating it" in record.getMessage():
            self.seen = True
            return False
        return True


def experiment_name_of(run_dir: Path, output_root: Path) -> str:
    """The run dir's parent relative to the output root (``runs``, ``multiruns/<sweep>``), or the
    parent's name when the run dir lies elsewhere."""
    parent = run_dir.resolve().parent
    try:
        return parent.relative_to(output_root.resolve()).as_posix() or parent.name
    except ValueError:
        return parent.name


def store_fault(uri: str, err: BaseException) -> str:
    """What went wrong opening the MLflow store at ``uri``, and the fix."""
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    lowered = str(err).lower()
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered or isinstance(err, OSError):
        fix = ("its folder is read-only or missing: set paths.output_root=DIR to a writable folder, or "
               "logger.mlflow.tracking_uri=sqlite:////a/writable/mlflow.db")
    elif "not a database" in lowered or "malformed" in lowered or "no such table" in lowered:
        fix = ("the file is not an MLflow store (damaged, or another program's): move it aside, or point "
               "logger.mlflow.tracking_uri at another file")
    elif "registered tracking store" in lowered or "scheme" in lowered or "unsupported uri" in lowered:
        fix = "use sqlite:///PATH (a local file), file:PATH (a folder) or http(s)://HOST:PORT (a server)"
    elif "connect" in lowered or "timed out" in lowered or "max retries" in lowered or "resolve" in lowered:
        fix = ("the server did not answer: start it (mlflow server --host HOST --port PORT), check the address, "
               "or drop logger.mlflow.tracking_uri to use the local store under paths.output_root")
    else:
        fix = "check logger.mlflow.tracking_uri, or use logger=tensorboard"
    return f"logger.mlflow.tracking_uri={uri}: the MLflow store cannot be opened ({type(err).__name__}: {text}); {fix}"


class MLflowRunLogger(MLFlowLogger):
    """An MLflow run for one job (see the module docstring).

    Args:
        run_dir: the job's run dir; its name is the run's name.
        output_root: where every run lands (``paths.output_root``): the default store and artifact
            root are in it, and the experiment's name is the run dir's place below it.
        tracking_uri: the store; ``None``: ``sqlite:///<output_root>/mlflow.db``.
        experiment_name: ``None``: :func:`experiment_name_of` the run dir.
        log_best_checkpoint: attach the best checkpoint (``best_checkpoint`` in results.json).
        kwargs: the other arguments of Lightning's ``MLFlowLogger`` (tags, prefix, ...).
    """

    def __init__(self, run_dir: str | Path, output_root: str | Path, tracking_uri: str | None = None,
                 experiment_name: str | None = None, log_best_checkpoint: bool = False, **kwargs: Any) -> None:
        run_dir, root = Path(run_dir), Path(output_root)
        uri = tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
        # a server that does not answer fails in seconds, not after minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        database = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        try:
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
            # MLflow's first client of a fresh SQLite store creates its tables, and two at once collide
            # (``table runs already exists``): parallel jobs take turns here
            with FileLock(str(database) + ".lock", timeout=300) if database is not None else nullcontext():
                super().__init__(
                    experiment_name=experiment_name or experiment_name_of(run_dir, root),
                    run_name=run_dir.resolve().name,
                    tracking_uri=uri,
                    artifact_location=(root.resolve() / "mlartifacts").as_uri(),
                    log_model=False,
                    **kwargs,
                )
                self._open_run()
        except Exception as err:  # SQLAlchemy's, MLflow's and the HTTP client's errors: one paragraph
            raise ConfigError(store_fault(uri, err)) from err
        self.log_best_checkpoint = log_best_checkpoint
        on_record_written(self.close_with_record)

    @rank_zero_only
    def _open_run(self) -> None:
        """The experiment and the run, created now (before training), not at the first metric.
        A new experiment is news, not a problem: said once at INFO (Lightning warns "not found")."""
        lightning_log = logging.getLogger("lightning.pytorch.loggers.mlflow")
        new_experiment = _Creating()
        lightning_log.addFilter(new_experiment)
        try:
            _ = self.experiment
        finally:
            lightning_log.removeFilter(new_experiment)
        if new_experiment.seen:
            log.info("MLflow: created the experiment %r in %s", self._experiment_name, self._tracking_uri)

    @rank_zero_only
    def log_figure(self, tag: str, figure: Figure, step: int = 0) -> None:
        """``figure`` as ``<tag>.png`` among the run's artifacts (``test/confusion_matrix.png``)."""
        self.experiment.log_figure(self.run_id, figure, f"{tag}.png")

    @rank_zero_only
    def log_text(self, tag: str, text: str) -> None:
        """``text`` as an artifact: ``config`` becomes ``config.yaml``, any other tag ``<tag>.txt``."""
        self.experiment.log_text(self.run_id, text, "config.yaml" if tag == "config" else f"{tag}.txt")

    def finalize(self, status: str = "success") -> None:
        """Lightning's end of a fit or test; an interruption (Ctrl-C, SIGTERM) is KILLED, not FAILED.
        The run's last word is :meth:`close_with_record`'s."""
        import sys

        super().finalize("KILLED" if status == "failed" and isinstance(sys.exc_info()[1], KeyboardInterrupt) else status)

    def close_with_record(self, record: dict[str, Any], results_file: Path) -> None:
        """results.json (and the best checkpoint) as artifacts, and the job's outcome as the status."""
        if not self._initialized or self.run_id is None:  # the job failed before the run started
            return
        client = self.experiment
        client.log_artifact(self.run_id, str(results_file))
        best = record.get("best_checkpoint")
        if self.log_best_checkpoint and best and Path(best).is_file():
            client.log_artifact(self.run_id, best, "checkpoints")
        status = "FINISHED" if record.get("status") == "ok" else "KILLED" if "signal" in record else "FAILED"
        client.set_terminated(self.run_id, status)
        log.info("MLflow run %s (%s) in experiment %r: %s", self._run_name, self.run_id, self._experiment_name, status)
