"""The console of a default run: each line once, no library advert."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli


@pytest.mark.slow
def test_a_default_run_prints_each_line_once_and_no_advert(tmp_path):
    result = run_cli(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1", "logger=none")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [re.sub(r"^\[[^\]]*\]\[[^\]]*\]\[[A-Z]+\] - ", "", line) for line in
             (result.stdout + result.stderr).splitlines() if line.strip()]
    lines = [re.sub(r"^(INFO|WARNING|ERROR): ", "", line) for line in lines]
    # the progress bar redraws; every logged line appears once
    logged = [line for line in lines if not re.match(r"^(Epoch|Validation|Testing|\s)", line) and "━" not in line]
    repeated = sorted({line for line in logged if logged.count(line) > 1 and "Restoring states" not in line
                       and "Loaded model weights" not in line})
    assert not repeated, repeated
    text = result.stdout + result.stderr
    assert "Tip:" not in text and "litlogger" not in text and "LeafSpec" not in text
    assert "will override existing callbacks" not in text
    assert "FLOPs" not in text and "unexpected behavior" not in text  # the empty column, the eval-mode alarm
    assert len(logged) < 40


@pytest.mark.slow
def test_a_frozen_backbone_run_says_once_what_its_eval_mode_modules_are(tmp_path):
    result = run_cli(f"hydra.run.dir={tmp_path}", "model=efficientnet_lite0", "finetune=classifier_only",
                     "data.image_size=32", "trainer.max_epochs=1", "logger=none", "+trainer.limit_train_batches=2")
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout + result.stderr
    assert re.search(r"\d+ modules in eval mode \(frozen blocks", text) and "unexpected behavior" not in text
    assert text.count("GPU available:") == 1  # three Trainers (caching, head fit, fit), one banner


def test_help_lists_every_mode_and_every_config_group_in_one_line_each():
    from conftest import CONF

    from experiments.pipeline.tasks import TASKS

    result = run_cli("--help", timeout=60)
    assert result.returncode == 0, result.stderr
    modes = result.stdout.split("== Modes (mode=...) ==", 1)[1].split("==", 1)[0]
    groups = result.stdout.split("== Config groups (group=option) ==", 1)[1].split("The options of each group", 1)[0]
    described = {line.split()[0] for line in groups.splitlines() if line.strip()}
    assert {line.split()[0] for line in modes.splitlines() if line.strip()} == set(TASKS)
    assert described == {p.name for p in CONF.iterdir() if p.is_dir()}  # a new group needs its line


@pytest.mark.slow
def test_a_line_per_epoch_in_the_log_of_a_piped_run(tmp_path):
    result = run_cli(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=2", "logger=none", "callbacks.progress_bar=null")
    assert result.returncode == 0, result.stderr[-2000:]
    for output in (result.stdout, (tmp_path / "run.log").read_text()):
        epochs = [line for line in output.splitlines() if re.search(r"epoch \d/2  train/loss [\d.]+  val/loss", line)]
        assert len(epochs) == 2 and "val/acc" in epochs[0] and epochs[1].rstrip().endswith(" s"), output[-1500:]


@pytest.mark.parametrize("value, shown", [("0", "0"), ("off", "'off'"), ("-3", "-3"), ("2.5", "2.5")])
def test_a_bad_redraw_interval_is_refused_before_torch(tmp_path, value, shown):
    from conftest import compose_cfg

    from experiments.config.rules import validate
    from experiments.errors import ConfigError

    cfg = compose_cfg(tmp_path, f"callbacks.progress_bar.every_n_steps={value}", fast=False)
    with pytest.raises(ConfigError, match=rf"callbacks\.progress_bar\.every_n_steps={re.escape(shown)} is invalid: expected an integer >= 1"):
        validate(cfg)
