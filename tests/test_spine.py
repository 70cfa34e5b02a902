"""The spine: composition, the default run end to end, results.json, TensorBoard, fast errors."""

from __future__ import annotations

import inspect
import re

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONF, ROOT, compose_cfg, run_cli, run_job
from hydra.utils import instantiate

from experiments.pipeline.results import read_results

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
DEFAULTS = {k: v for entry in yaml.safe_load((CONF / "run.yaml").read_text())["defaults"] if isinstance(entry, dict)
            for k, v in entry.items()}


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_option_composes(tmp_path, group, option):
    cfg = compose_cfg(tmp_path, f"{group}={option}", fast=False)  # null defaults take no "+"
    default = compose_cfg(tmp_path, fast=False)
    if group == "hparams_search":  # it configures Hydra's sweeper, outside the job's config
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(str(CONF), version_base="1.3"):
            hydra_cfg = compose("run", overrides=[f"{group}={option}"], return_hydra_config=True).hydra
        assert option in hydra_cfg.sweeper._target_.lower()
    elif DEFAULTS.get(group) == option:
        assert cfg == default  # the default option changes nothing
    else:
        assert cfg != default, f"{group}={option} composes to the default config"


@pytest.mark.slow  # every option of every group built (~9 s); test_every_option_composes stays in the default tier
def test_group_options_instantiate(tmp_path):
    cfg = compose_cfg(tmp_path)
    for group in ("optimizer", "scheduler"):
        for option in group_options(group):
            node = compose_cfg(tmp_path, f"{group}={option}")[group]
            if node is not None:
                factory = instantiate(node)
                opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
                if group == "optimizer":
                    assert factory([torch.nn.Parameter(torch.zeros(1))]) is not None
                    continue
                # a schedule over the run's steps gets them where the module completes it
                takes_steps = "total_steps" in inspect.signature(factory.func).parameters
                assert factory(opt, **({"total_steps": 10} if takes_steps else {})) is not None
    for option in group_options("finetune"):
        assert instantiate(compose_cfg(tmp_path, f"finetune={option}").finetune).name == option
    from experiments.config.rules import missing_keys

    built = []
    for option in group_options("data"):
        data = compose_cfg(tmp_path, f"data={option}").data
        if missing_keys(data) or data._target_.endswith("TextDataModule"):  # the user's files; text: tests/test_text.py
            continue
        assert instantiate(data).num_classes == data.get("num_classes", 10), option
        built.append(option)
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100"} <= set(built)
    for key, node in cfg.callbacks.items():
        if node is not None:
            assert instantiate(node) is not None, key


def test_default_run_writes_results_checkpoints_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_cfg(tmp_path, "trainer.max_epochs=3")
    record = run_job(cfg)
    assert record["status"] == "ok"
    for key in ("val/acc", "val/loss", "test/acc", "test/loss"):
        assert isinstance(record["metrics"][key], float)
    assert record["metrics"]["test/acc"] > 0.5  # 10 classes: chance is 0.1
    assert record["params"]["total"] == record["params"]["trainable"] > 0
    assert record["epochs"] == 3
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert Path(record["best_checkpoint"]).is_file()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"val/acc", "test/acc", "train/loss"} <= set(scalars)
    val_acc = events.Scalars("val/acc")
    assert len(val_acc) == 3 + 1  # one per epoch, then the best checkpoint's re-evaluation
    assert val_acc[-1].value == pytest.approx(record["metrics"]["val/acc"])
    assert events.Scalars("test/acc")[-1].value == pytest.approx(record["metrics"]["test/acc"])


class Probe(torch.nn.Module):
    """Records the mode and grad state of every forward pass."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.inner(x)


def test_validation_and_test_run_in_eval_mode_without_grad(tmp_path):
    from experiments.finetune import Full
    from experiments.lightningmodules.classification import ClassificationModule
    from experiments.pipeline.build import build_trainer, model_from_config

    cfg = compose_cfg(tmp_path, "trainer.max_epochs=1", "logger=none", "callbacks.model_checkpoint=null")
    datamodule = instantiate(cfg.data)
    model = model_from_config(cfg.model, 10, (1, 8, 8))
    probe = Probe(model.head)
    model.head = probe
    module = ClassificationModule(model, 10, instantiate(cfg.optimizer), Full())
    trainer = build_trainer(cfg, [])
    trainer.fit(module, datamodule=datamodule)
    fit_calls = list(probe.calls)
    probe.calls.clear()
    trainer.test(module, datamodule=datamodule, verbose=False)
    n_train = len(datamodule.train_dataloader())
    n_val = len(datamodule.val_dataloader())
    training_calls = [c for c in fit_calls if c == (True, True)]
    other_calls = [c for c in fit_calls if c != (True, True)]
    assert len(training_calls) == n_train
    assert len(other_calls) >= n_val and set(other_calls) == {(False, False)}
    assert len(probe.calls) == len(datamodule.test_dataloader()) and set(probe.calls) == {(False, False)}


def test_validation_fails_before_heavy_imports(tmp_path):
    from omegaconf import OmegaConf

    from experiments.config.rules import validate
    from experiments.errors import ConfigError

    for override, key in [
        ("data.batch_size=0", "data.batch_size"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("data.val_fraction=1.5", "data.val_fraction"),
    ]:
        cfg = compose_cfg(tmp_path, override)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(cfg)
    # the CLI path: the config layer alone must not pull in torch
    code = (
        "import sys, experiments.cli, experiments.config.rules, hydra;"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    )
    import subprocess

    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    assert OmegaConf.select(cfg, "data.batch_size") == 64


def test_bad_value_exits_nonzero_with_one_message_and_leaves_no_folder(tmp_path):
    result = run_cli("data.batch_size=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "data.batch_size=0" in result.stderr and "integer >= 1" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("data.batch_size=0") == 1  # once, not twice
    assert not (tmp_path / "run").exists()  # refused before torch: nothing written


def test_unknown_option_and_key_are_refused(tmp_path):
    result = run_cli("model=resnet19", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "resnet19" in result.stderr and "resnet18" in result.stderr
    result = run_cli("trainer.max_epoch=3", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "max_epoch" in result.stderr


@pytest.mark.slow
def test_cli_default_run_end_to_end(tmp_path):
    result = run_cli("trainer.max_epochs=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_results(tmp_path)
    assert record["status"] == "ok" and record["metrics"]["test/acc"] > 0.5
    log = (tmp_path / "run.log").read_text()
    assert "done: test/acc" in log and str(tmp_path) in log


@pytest.mark.slow  # a sweep: several processes
def test_multirun_runs_every_job_even_when_one_fails(tmp_path):
    result = run_cli(
        "-m", "trainer.max_epochs=1", "optimizer.lr=1e-3,-1", f"hydra.sweep.dir={tmp_path}",
        "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
    )
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "results.json").exists())
    assert len(jobs) == 2, result.stderr[-2000:]
    statuses = sorted(read_results(j)["status"] for j in jobs)
    assert statuses == ["failed", "ok"]
    ok_job = next(j for j in jobs if read_results(j)["status"] == "ok")
    assert list((ok_job / "tensorboard").glob("events.out.tfevents.*"))


def test_every_mode_has_a_task_and_the_config_layer_imports_no_task():
    from experiments.config.rules import MODES
    from experiments.pipeline.tasks import TASKS

    assert tuple(TASKS) == MODES
    imports = set()
    for source in (ROOT / "src" / "experiments" / "config").glob("*.py"):
        imports |= set(re.findall(r"^\s*(?:from|import) (experiments\.\w+)", source.read_text(), flags=re.M))
    assert imports and imports <= {"experiments.config", "experiments.errors"}, imports
