"""Every key of every option checked before torch: booleans are booleans, library callbacks' and
loggers' keys are typed and ranged, a watched metric is one the run logs, in its direction."""

from __future__ import annotations

import copy

import pytest
from conftest import compose_cfg, run_job
from omegaconf import OmegaConf

from experiments.config.rules import validate
from experiments.errors import ConfigError

COMBINATIONS = [[], *(pytest.param(c, marks=pytest.mark.slow) for c in (
    ["logger=mlflow", "callbacks=early_stopping"], ["finetune=lora"], ["finetune=auto"],
    ["data=da_pair", "adapt=dann", "model=small_resnet"], ["augment=digits"],
    ["data=text", "data.path=texts.csv", "model=sparse_mlp", "data.features=tfidf"]))]


def boolean_keys(cfg) -> list[str]:
    """Every key of the composed config (Hydra's own section aside) whose value is a boolean."""
    found = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                if not (prefix == "" and key == "hydra"):
                    walk(value, f"{prefix}{key}.")
        elif isinstance(node, bool):
            found.append(prefix[:-1])

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


@pytest.mark.parametrize("combination", COMBINATIONS, ids=["default", "mlflow-early-stopping", "lora", "auto", "dann",
                                                         "augment", "tfidf"])
def test_no_boolean_key_takes_a_word_for_true(tmp_path, combination):
    composed = compose_cfg(tmp_path, *combination)
    keys = boolean_keys(composed)
    assert len(keys) >= 10
    for key in keys:
        for word in ("off", "no", 0):  # what `key=off` on the command line gives: a string, or 0
            cfg = copy.deepcopy(composed)
            OmegaConf.update(cfg, key, word, merge=False)
            with pytest.raises(ConfigError, match=rf"{key}={word!r} is invalid: expected (true|one of)"):
                validate(cfg)


@pytest.mark.parametrize(("override", "message"), [
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1 is invalid: expected an integer >= 0"),
    ("callbacks.early_stopping.mode=best", "callbacks.early_stopping.mode='best' is invalid: expected one of min, max"),
    ("callbacks.model_checkpoint.save_top_k=-2", "save_top_k=-2 is invalid: expected an integer >= -1"),
    ("trainer.devices=0", "trainer.devices=0 is invalid: expected auto, a count >= 1, -1"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is invalid: expected an integer >= 1"),
])
def test_library_options_keys_are_checked_before_torch(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate(compose_cfg(tmp_path, "callbacks=early_stopping", override))


@pytest.mark.parametrize(("override", "message"), [
    ("callbacks.early_stopping.monitor=val/accuracy", "callbacks.early_stopping.monitor=val/accuracy is not a metric this run logs"),
    ("callbacks.early_stopping.mode=min", "callbacks.early_stopping.mode=min but val/acc is better higher: use callbacks.early_stopping.mode=max"),
    ("+callbacks.early_stopping.patince=3", "patince"),
])
def test_a_watched_metric_is_logged_and_watched_in_its_direction_before_training(tmp_path, override, message):
    with pytest.raises(SystemExit):
        run_job(compose_cfg(tmp_path, "callbacks=early_stopping", "trainer.max_epochs=1", "logger=none", override))
    from experiments.pipeline.results import read_results

    record = read_results(tmp_path)
    assert message in record["error"] and "global_step" not in record and "Traceback" not in record["error"]


def test_switching_the_progress_bar_and_summary_off_is_enough(tmp_path):
    record = run_job(compose_cfg(tmp_path, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none",
                                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"))
    assert record["status"] == "ok"
