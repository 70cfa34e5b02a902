"""logger=mlflow: runs read back from the MLflow store (params, per-epoch metrics, artifacts, status),
and a clear error without the package."""

from __future__ import annotations

import logging
import os
import signal
import sys

import lightning as L
import pytest
from conftest import compose_cfg, run_job

from experiments.errors import ConfigError

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

TINY = ["trainer.max_epochs=2", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2"]


class SigtermAfterFirstEpoch(L.Callback):
    """The job receives SIGTERM (as from a scheduler) after its first training epoch."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def runs_of(root, experiment: str):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, [e.name for e in client.search_experiments()]
    return client, {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


def artifacts_of(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    names = set()
    for item in client.list_artifacts(run_id, path):
        names |= artifacts_of(client, run_id, item.path) if item.is_dir else {item.path}
    return names


def test_mlflow_and_tensorboard_together_read_back_params_metrics_artifacts(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_dir = tmp_path / "runs" / "first"
    overrides = ["optimizer.lr=0.002", "logger=[tensorboard,mlflow]", "logger.mlflow.log_best_checkpoint=true"]
    record = run_job(compose_cfg(run_dir, *TINY, *overrides, f"paths.output_root={tmp_path}"), overrides)
    assert record["status"] == "ok"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard too

    client, runs = runs_of(tmp_path, "runs")
    run = runs["first"]  # named as TensorBoard names it: by its run dir
    assert run.info.status == "FINISHED"
    params = run.data.params  # the HPARAMS tab's short list, the overridden key among them
    assert params["model.name"] == "small_cnn" and float(params["optimizer.lr"]) == pytest.approx(0.002)
    assert "data._target_" not in params and len(params) <= 12
    assert params["logger"] == "[tensorboard,mlflow]"  # the choice typed, not the loggers' whole config
    assert "not found. Creating it" not in caplog.text and "MLflow: created the experiment 'runs'" in caplog.text
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert len(history) == record["epochs"] + 1 == 3  # one value per epoch, then the best checkpoint's
    assert run.data.metrics["test/acc"] == pytest.approx(record["metrics"]["test/acc"])
    artifacts = artifacts_of(client, run.info.run_id)
    assert {"results.json", "config.yaml", "test/confusion_matrix.png", "test/samples.png"} <= artifacts
    assert any(a.startswith("checkpoints/") and a.endswith(".ckpt") for a in artifacts), artifacts


def test_failed_and_interrupted_runs_are_marked_so(tmp_path):
    failing = compose_cfg(tmp_path / "runs" / "diverged", *TINY, "optimizer.lr=1e10", "scheduler=none",
                          "logger=mlflow", f"paths.output_root={tmp_path}")
    with pytest.raises(SystemExit):
        run_job(failing)
    interrupted = compose_cfg(tmp_path / "runs" / "stopped", *TINY, "logger=mlflow", f"paths.output_root={tmp_path}",
                              f"+callbacks.sigterm._target_={__name__}.SigtermAfterFirstEpoch")
    with pytest.raises(SystemExit) as stopped:
        run_job(interrupted)
    assert stopped.value.code == 128 + signal.SIGTERM

    client, runs = runs_of(tmp_path, "runs")
    assert runs["diverged"].info.status == "FAILED" and runs["stopped"].info.status == "KILLED"
    for run in runs.values():  # the record says why, beside the run
        assert "results.json" in artifacts_of(client, run.info.run_id)


def test_logger_mlflow_without_the_package_names_the_extra(tmp_path, monkeypatch):
    from experiments.config.rules import validate

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as on a machine without it
    with pytest.raises(ConfigError, match=r'logger=mlflow needs mlflow.*pip install -e "\.\[tracking\]"'):
        validate(compose_cfg(tmp_path, "logger=mlflow"))


@pytest.mark.parametrize(("case", "fix"), [
    ("corrupt", "the file is not an MLflow store"),
    ("not_a_folder", "its folder is read-only or missing"),
    ("scheme", "use sqlite:///PATH (a local file), file:PATH (a folder) or http(s)://HOST:PORT"),
    ("no_server", "the server did not answer"),
])
def test_an_mlflow_store_that_cannot_be_opened_is_one_paragraph_before_training(tmp_path, case, fix):
    from experiments.reporting.mlflow_logger import MLflowRunLogger

    root = tmp_path / "outputs"
    root.mkdir()
    uri = {"corrupt": f"sqlite:///{root / 'mlflow.db'}", "not_a_folder": f"sqlite:///{root / 'notes.txt' / 'mlflow.db'}",
           "scheme": "bogus://store", "no_server": "http://127.0.0.1:9"}[case]
    (root / "mlflow.db").write_bytes(b"this is not a database " * 100)
    (root / "notes.txt").write_text("a file where a folder is expected")
    with pytest.raises(ConfigError, match=f"logger.mlflow.tracking_uri={uri}: the MLflow store cannot be opened") as err:
        MLflowRunLogger(run_dir=root / "runs" / "one", output_root=root, tracking_uri=uri)
    assert fix in str(err.value) and "Traceback" not in str(err.value)


_PARALLEL_JOB = """
import sys
from experiments.reporting.mlflow_logger import MLflowRunLogger
logger = MLflowRunLogger(run_dir=sys.argv[1], output_root=sys.argv[2])
logger.log_metrics({"x": 1.0}, step=0)
logger.finalize("success")
print("ok", logger.run_id)
"""


@pytest.mark.slow
def test_parallel_jobs_create_a_fresh_store_once(tmp_path):
    """The local launcher starts jobs together: one creates the store's tables, the others wait."""
    import subprocess

    root = tmp_path / "outputs"
    jobs = [subprocess.Popen([sys.executable, "-c", _PARALLEL_JOB, str(root / "multiruns" / "s" / str(i)), str(root)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outputs = [job.communicate(timeout=180) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), [err[-1500:] for _, err in outputs]
    client, runs = runs_of(root, "multiruns/s")
    assert sorted(runs) == ["0", "1", "2"]
