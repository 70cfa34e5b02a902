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
    assert len(logged) < 40


@pytest.mark.slow
def test_a_line_per_epoch_in_the_log_of_a_piped_run(tmp_path):
    result = run_cli(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=2", "logger=none", "callbacks.progress_bar=null")
    assert result.returncode == 0, result.stderr[-2000:]
    for output in (result.stdout, (tmp_path / "run.log").read_text()):
        epochs = [line for line in output.splitlines() if re.search(r"epoch \d/2  train/loss [\d.]+  val/loss", line)]
        assert len(epochs) == 2 and "val/acc" in epochs[0] and epochs[1].rstrip().endswith(" s"), output[-1500:]
