"""The run pipeline's shape: imports flow one way, the job wrapper owns the record, one fit."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import compose_cfg

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "experiments"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports, at module level or inside a
    function (a function-local import hides a cycle from Python, not from this)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):  # a parent package runs first anyway
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "experiments.pipeline.build" in graph and graph["experiments.pipeline.tasks"]  # the graph is read
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_builders_never_see_auto_and_cli_is_a_few_lines():
    build = (PACKAGE / "pipeline" / "build.py").read_text()
    assert "Auto" not in build and "finetune.auto" not in build
    cli = (PACKAGE / "cli.py").read_text()
    assert len(cli.splitlines()) < 80
    graph = import_graph()
    assert not [m for m, deps in graph.items() if "experiments.cli" in deps]  # nothing calls back into it


def test_one_trainer_construction_for_every_fit_validate_test_and_predict():
    """``build.build_trainer`` makes every Trainer a task or a race trial uses; the one other is the
    feature cache's predict-only extraction (no loggers or checkpoints of the run belong there)."""
    sites = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        count = len(re.findall(r"\bTrainer\(", text)) + len(re.findall(r"instantiate\(cfg\.trainer\b", text))
        if count:
            sites[str(path.relative_to(PACKAGE))] = count
    assert sites == {"pipeline/build.py": 1, "finetune/cache.py": 1}, sites


def test_no_module_over_300_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_resolvers_are_registered_by_the_entry_points_not_by_an_import(tmp_path):
    import subprocess
    import sys

    script = ("from omegaconf import OmegaConf\n"
              "import experiments.config.rules, experiments.pipeline.job, experiments.cli\n"
              "print(OmegaConf.has_resolver('objective_mode'))\n"
              "from experiments.config.resolvers import register_resolvers\n"
              "register_resolvers()\n"
              "print(OmegaConf.has_resolver('objective_mode'), OmegaConf.has_resolver('swept_name'))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout.split()
    assert out == ["False", "True", "True"]


@pytest.mark.parametrize("metric, mode", [("val/acc", "max"), ("val/loss", "min"), ("train/source_loss", "min"),
                                          ("val/target_entropy", "min"), ("val/target_snd", "max"),
                                          ("val/target_im", "max"), ("val/target_confident", "max")])
def test_one_table_says_which_way_each_metric_is_better(metric, mode):
    from experiments.adapt.validators import VALIDATORS
    from experiments.config.metrics import HIGHER_IS_BETTER, objective_mode

    assert objective_mode(metric) == mode
    assert all(HIGHER_IS_BETTER[name] == higher for name, higher in VALIDATORS.items())


def test_a_task_returns_its_record_and_what_it_built(tmp_path):
    """A test, a benchmark or the race reuses the built run: the Trainer, the module and the data."""
    from experiments.pipeline.tasks import train

    outcome = train(compose_cfg(tmp_path, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none"))
    assert outcome.record["epochs"] == 1 and outcome.trainer.current_epoch == 1
    assert outcome.parts.module is outcome.trainer.lightning_module
    assert outcome.record["metrics"]["test/acc"] == pytest.approx(float(outcome.trainer.callback_metrics["test/acc"]))


def test_the_job_wrapper_answers_where_last_ckpt_is(tmp_path):
    from experiments.pipeline.rundirs import last_checkpoint

    cfg = compose_cfg(tmp_path)
    assert last_checkpoint(cfg) == tmp_path / "checkpoints" / "last.ckpt"
    moved = compose_cfg(tmp_path, f"callbacks.last_checkpoint.dirpath={tmp_path / 'elsewhere'}")
    assert last_checkpoint(moved) == tmp_path / "elsewhere" / "last.ckpt"
