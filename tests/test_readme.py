"""The README and the documentation site are part of the product: their commands compose, the
fine-tuning ones run, the results.json schema matches a real record, and the site builds strictly."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT, compose_cfg, run_job
from hydra.core.override_parser.overrides_parser import OverridesParser

README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
#: every page a reader sees: the README and each page of the site, by path relative to the root
PAGES = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted(DOCS.glob("*.md"))}}
README_MAX_LINES = 300
HELP_FLAGS = {"--help", "--cfg", "job", "-m", "--multirun"}


def commands_of(text: str) -> list[str]:
    """The `python run.py` commands of a page: lines of its ```bash blocks and inline code spans."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    found = [line.strip() for block in blocks for line in block.splitlines() if "python run.py" in line]
    found += re.findall(r"`(python run\.py[^`]*)`", text)
    return found


COMMANDS = list(dict.fromkeys(c for text in PAGES.values() for c in commands_of(text)))


def overrides_of(command: str) -> list[str]:
    """The overrides a documented command passes; sweeps contribute their first value."""
    words = shlex.split(command.split("python run.py", 1)[1].split("  #")[0])
    words = [re.sub(r"<[^>]+>", "x", w) for w in words if w not in HELP_FLAGS]
    parsed = OverridesParser.create().parse_overrides(words)
    out = []
    for override in parsed:
        if override.is_sweep_override():
            if not override.is_choice_sweep():
                continue  # an Optuna search range: the sweeper's, not a single value
            value = next(override.sweep_string_iterator())
            out.append(f"{override.get_key_element()}={value}")
        else:
            out.append(override.input_line)
    return out


def test_readme_has_the_commands_it_promises():
    assert "pip install -e \".[dev]\"" in README and "python -m pytest" in README
    assert "python run.py" in README
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_composes(tmp_path, command):
    cfg = compose_cfg(tmp_path, *overrides_of(command), fast=False)  # as the user's command composes: every default kept
    assert cfg.mode in {"train", "test", "predict", "export", "advise", "env", "models"}


#: the guidance table's rows (and the other strategy commands) on the packaged ImageNet model: they run offline as written
FINETUNE_ROWS = [c for c in COMMANDS if "finetune=" in c and "model=efficientnet_lite0" in c and "weights" not in c
                 and "mode=" not in c]
#: the README's first command runs in the default tier; the other rows in the slow tier (each is an
#: EfficientNet-Lite0 fit)
HEADLINE = commands_of(README)[0]


@pytest.mark.parametrize("command", [c if c == HEADLINE else pytest.param(c, marks=pytest.mark.slow) for c in FINETUNE_ROWS])
def test_fine_tuning_table_commands_run(tmp_path, command):
    quick = ["trainer.max_epochs=2", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2"]
    overrides = overrides_of(command)
    overrides = [o if not o.startswith("finetune.probe_epochs") else "finetune.probe_epochs=1" for o in overrides]
    overrides = [o if not o.startswith("finetune.unfreeze_every") else "finetune.unfreeze_every=1" for o in overrides]
    record = run_job(compose_cfg(tmp_path, *overrides, *quick))
    assert record["status"] == "ok" and record["finetune"] in command


def test_readme_scripts_exist():
    scripts = {s for text in PAGES.values() for s in re.findall(r"python (benchmarks/\w+\.py)", text)}
    assert scripts, "no page names a benchmark script"
    for script in scripts:
        assert (ROOT / script).is_file(), script


def test_model_listing_command_prints_matching_names(capsys):
    from experiments.models.listing import main

    main(["torchvision", "resnet"])
    lines = capsys.readouterr().out.splitlines()
    assert "resnet18" in lines and "resnet50" in lines
    assert all("resnet" in line for line in lines[:-1]) and lines[-1] == f"{len(lines) - 1} torchvision models"


def _documented_results_keys() -> set[str]:
    """The keys of the results.json schema table (docs/results.md, section "## results.json")."""
    section = (DOCS / "results.md").read_text().split("## results.json", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for row in re.findall(r"^\| (`[^|]+`) \|", section, flags=re.M):
        keys |= set(re.findall(r"`([^`]+)`", row))
    return keys


def test_results_table_matches_a_real_record(tmp_path):
    record = run_job(compose_cfg(tmp_path, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none"))
    documented = _documented_results_keys()
    assert set(record) <= documented, f"undocumented keys: {set(record) - documented}"
    # failures, interruptions, test, predict, DA
    only_elsewhere = {"error", "signal", "resume", "global_step", "checkpoint", "predictions", "num_predictions", "adapt",
                      "num_undecodable", "predictions_figure", "export", "published", "pruned"}  # published: publish= only
    assert documented - only_elsewhere <= set(record), f"documented but not written: {documented - only_elsewhere - set(record)}"


def test_readme_is_short_and_links_every_page():
    lines = README.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/"
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)(?:#[^)]*)?\)", README))
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages <= linked, f"README.md does not link {sorted(pages - linked)}"


def test_docs_site_builds_strictly(tmp_path):
    """`mkdocs build --strict` (mkdocs and mkdocs-material are in the dev extra): every page is in
    the nav, every relative link and anchor resolves."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_documented_extra_exists():
    """`pip install -e ".[name]"` on any page names an extra that pyproject.toml declares."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {extra.strip() for text in PAGES.values() for group in re.findall(r'pip install -e "\.\[([^\]]+)\]"', text)
             for extra in group.split(",")}
    assert {"dev", "tracking", "tracking-ui"} <= named and named <= declared, named - declared
