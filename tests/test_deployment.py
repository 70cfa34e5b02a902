"""After the experiment: predict new files (mode=predict predict.inputs=PATH) from a checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, run_job

from experiments.errors import ConfigError

QUICK = ["trainer.max_epochs=1", "+trainer.limit_train_batches=4", "logger=none"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small_cnn trained one short epoch on digits: its best checkpoint (the run dir beside it)."""
    run = tmp_path_factory.mktemp("trained")
    cfg = compose_cfg(run, *QUICK)
    from omegaconf import OmegaConf

    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as run.py leaves it beside the checkpoints
    record = run_job(cfg)
    return Path(record["best_checkpoint"])


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def digits_pngs(folder: Path, count: int) -> torch.Tensor:
    """The first ``count`` scikit-learn digits saved as 8x8 grey PNGs; returns them as [0, 1] tensors."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images[:count] / 16.0
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(folder / f"digit{i}.png")
    return torch.tensor(images, dtype=torch.float32)[:, None]


def model_probabilities(ckpt: Path, images: torch.Tensor) -> torch.Tensor:
    """What the checkpoint's model gives ``images`` prepared by its data's evaluation transform."""
    from experiments.pipeline.build import build_components
    from experiments.pipeline.from_checkpoint import config_for_checkpoint

    cfg, _ = config_for_checkpoint(compose_cfg(ckpt.parent.parent / "ref", "mode=predict", f"ckpt_path={ckpt}"), [])
    parts = build_components(cfg)
    parts.module.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    transform = parts.datamodule.build_transform(train=False)
    with torch.no_grad():
        return torch.softmax(parts.model.eval()(transform(images)), dim=1)


def test_predict_a_folder_of_new_images_with_a_broken_file(tmp_path, trained, caplog):
    images = digits_pngs(tmp_path / "new", 5)
    (tmp_path / "new" / "broken.png").write_bytes(b"not an image at all")
    cfg = compose_cfg(tmp_path / "predict", "mode=predict", f"ckpt_path={trained}", f"predict.inputs={tmp_path / 'new'}",
                      "predict.top_k=3")
    record = run_job(cfg)
    assert record["status"] == "ok" and record["num_predictions"] == 5 and record["num_undecodable"] == 1
    rows = {Path(r["input"]).name: r for r in read_rows(tmp_path / "predict" / "predictions.csv")}
    assert "cannot decode" in rows["broken.png"]["error"] and rows["broken.png"]["predicted"] == ""
    assert "1 of 6 inputs could not be decoded" in caplog.text
    expected = model_probabilities(trained, images)
    for i in range(5):
        row = rows[f"digit{i}.png"]
        assert row["predicted"] == row["top1"] == str(int(expected[i].argmax())) and row["error"] == ""
        tops = [float(row[f"top{k}_probability"]) for k in (1, 2, 3)]
        assert tops == sorted(tops, reverse=True) and "top4" not in row
        assert float(row["probability"]) == pytest.approx(float(expected[i].max()), abs=0.01)  # 8-bit PNG rounding
    assert (tmp_path / "predict" / "predictions.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "nowhere", r"predict.inputs=.*: no such file or folder"),
    (lambda root: root.joinpath("empty").mkdir() or root / "empty", r"holds no input files"),
    (lambda root: root.joinpath("texts.txt").write_text("a text\n") and root / "texts.txt", r"is a text file, but this run's model takes images"),
], ids=["missing", "empty-folder", "text-for-an-image-model"])
def test_bad_inputs_are_refused_before_the_model_is_built(tmp_path, trained, make, message):
    from experiments.pipeline.tasks import predict

    cfg = compose_cfg(tmp_path / "predict", "mode=predict", f"ckpt_path={trained}", f"predict.inputs={make(tmp_path)}")
    with pytest.raises(ConfigError, match=message):
        predict(cfg)
    assert not (tmp_path / "predict" / "predictions.csv").exists()


# -- mode=export ------------------------------------------------------------------------------------
def export_run(tmp_path: Path, ckpt: Path, *overrides: str) -> dict:
    return run_job(compose_cfg(tmp_path, "mode=export", f"ckpt_path={ckpt}", *overrides))


def test_onnx_export_matches_pytorch_and_carries_its_preprocessing(tmp_path, trained, capsys):
    onnx = pytest.importorskip("onnx")
    import onnxruntime

    record = export_run(tmp_path, trained)
    assert record["status"] == "ok" and record["export"]["format"] == "onnx"
    assert record["export"]["max_logit_difference"] <= record["export"]["tolerance"] == 1e-3
    assert "largest logit difference to PyTorch" in capsys.readouterr().out
    path = Path(record["export"]["path"])
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)] and meta["channels"] == "1"
    assert meta["source_run"] == trained.parent.parent.name and meta["mean"] != "null"
    assert meta["checkpoint"] == f"checkpoints/{trained.name}"
    assert not [key for key, value in meta.items() if "/tmp" in value or str(Path.home()) in value]  # no machine paths
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch axis is dynamic
        assert session.run(None, {"input": np.zeros((batch, 1, 8, 8), np.float32)})[0].shape == (batch, 10)


def test_an_export_beyond_the_tolerance_is_refused(tmp_path, trained):
    record_dir = tmp_path / "strict"
    with pytest.raises(SystemExit):
        export_run(record_dir, trained, "export.tolerance=1e-30")  # onnxruntime sums in another order
    from experiments.pipeline.results import read_results

    assert "above export.tolerance=1e-30" in read_results(record_dir)["error"]
    assert not list(record_dir.glob("**/model.onnx")) and not list(record_dir.glob(".partial-*"))  # the unchecked file is not left to be used


def test_an_export_that_cannot_be_written_says_so_and_leaves_no_partial_file(tmp_path, trained, monkeypatch):
    import errno

    import experiments.export
    from experiments.pipeline.results import read_results

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(experiments.export, "fsync_file", read_only)
    with pytest.raises(SystemExit):
        export_run(tmp_path, trained)
    error = read_results(tmp_path)["error"]
    assert error.startswith(f"OutputError: cannot write the export {tmp_path / 'model.onnx'}: Read-only")
    assert "hydra.run.dir=DIR" in error and not list(tmp_path.glob("**/model.onnx")) and not list(tmp_path.glob(".partial-*"))


def test_safetensors_export_rebuilds_the_model_without_the_run_dir(tmp_path, trained):
    import shutil

    from experiments.export import load_exported_model

    record = export_run(tmp_path / "st", trained, "export.format=safetensors")
    assert record["export"]["max_logit_difference"] == 0.0
    moved = tmp_path / "elsewhere"
    shutil.copytree(Path(record["export"]["path"]).parent, moved)
    model = load_exported_model(moved / "model.safetensors")
    x = torch.rand(4, 1, 8, 8)
    reference = model_probabilities(trained, x)
    assert torch.allclose(torch.softmax(model(model_input(moved, x)), dim=1), reference, atol=1e-6)


def model_input(folder: Path, images: torch.Tensor) -> torch.Tensor:
    """``images`` prepared as model.json says: (x - mean) / std."""
    import json

    config = json.loads((folder / "model.json").read_text())
    mean, std = (torch.tensor(config[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    return (images - mean) / std


@pytest.mark.slow  # one short fit per family
@pytest.mark.parametrize("model", ["model=resnet18", "model=timm_resnet18", "model=efficientnet_lite0", "model=small_resnet"])
def test_every_image_family_exports_to_onnx_within_the_tolerance(tmp_path, model):
    pytest.importorskip("onnxruntime")
    overrides = [model, *(["model.pretrained=false"] if "resnet18" in model else []), "trainer.max_epochs=1",
                 "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
                 "logger=none", "data.eval_batch_size=8"]
    ckpt = Path(run_job(compose_cfg(tmp_path / "run", *overrides))["best_checkpoint"])
    record = export_run(tmp_path / "export", ckpt, *overrides, "export.check_batches=1")
    assert record["status"] == "ok" and record["export"]["max_logit_difference"] <= 1e-3


def test_predict_reads_every_format_as_training_does_and_a_16_bit_file_as_its_8_bit_twin(tmp_path, trained):
    from PIL import Image

    digit = np.round(digits_pngs(tmp_path / "ref", 1)[0, 0].numpy() * 255).astype(np.uint8)
    folder = tmp_path / "formats"
    folder.mkdir()
    Image.fromarray(digit, "L").save(folder / "a8.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(folder / "a16.png")  # 16-bit: 255 -> 65535
    Image.fromarray(digit.astype(np.uint16) * 257).save(folder / "a16.tif")
    for suffix, options in ((".gif", {}), (".webp", {"lossless": True}), (".bmp", {}), (".tiff", {})):
        Image.fromarray(digit, "L").save(folder / f"a{suffix}", **options)
    Image.fromarray(digit, "L").convert("RGBA").save(folder / "rgba.png")  # colour and alpha for a grey model
    record = run_job(compose_cfg(tmp_path / "predict", "mode=predict", f"ckpt_path={trained}", f"predict.inputs={folder}"))
    assert record["status"] == "ok" and record["num_predictions"] == 8 and record["num_undecodable"] == 0
    rows = {Path(r["input"]).name: r for r in read_rows(tmp_path / "predict" / "predictions.csv")}
    reference = rows["a8.png"]
    for name, row in rows.items():
        assert row["error"] == "" and row["predicted"] == reference["predicted"], name
        assert float(row["probability"]) == pytest.approx(float(reference["probability"]), abs=1e-4), name


def test_predictions_are_written_whole_or_not_at_all(tmp_path, trained, monkeypatch, capsys):
    """A failure mid-predict leaves no partial predictions.csv (nor a temporary file), and a previous
    one survives."""
    from experiments.reporting.predictions import PredictionsWriter

    digits_pngs(tmp_path / "new", 3)
    out = tmp_path / "predict"
    out.mkdir()
    (out / "predictions.csv").write_text("an earlier run's rows\n")

    class FullDisk:
        def writerows(self, rows):
            raise OSError(28, "No space left on device")

    started = PredictionsWriter.on_predict_start

    def start_then_fill_the_disk(self, trainer, module):
        started(self, trainer, module)  # the header is in; every batch after it hits a full disk
        self._writer = FullDisk()

    monkeypatch.setattr(PredictionsWriter, "on_predict_start", start_then_fill_the_disk)
    from experiments.pipeline.results import read_results

    with pytest.raises(SystemExit):
        run_job(compose_cfg(out, "mode=predict", f"ckpt_path={trained}", f"predict.inputs={tmp_path / 'new'}"))
    record = read_results(out)
    message = f"the disk is full (no space left): writing {out / 'predictions.csv'} failed"
    assert record["status"] == "failed" and message in record["error"] and message in capsys.readouterr().err
    assert "Traceback" not in record["error"]
    assert (out / "predictions.csv").read_text() == "an earlier run's rows\n"
    assert not list(out.glob(".predictions.csv*"))


def test_an_opset_outside_the_exporters_range_is_refused_before_any_work(tmp_path, trained):
    from experiments.pipeline.results import read_results

    with pytest.raises(SystemExit):
        export_run(tmp_path, trained, "export.opset=99")
    error = read_results(tmp_path)["error"]
    assert error.startswith("ModelError: export.opset=99 is outside what torch") and "choose one in that range" in error
    assert not list(tmp_path.glob("model.*"))


@pytest.mark.slow
def test_a_domain_adaptation_checkpoint_exports_the_network_it_evaluated(tmp_path):
    pytest.importorskip("onnx")
    from omegaconf import OmegaConf

    run = tmp_path / "da"
    cfg = compose_cfg(run, "data=da_pair", "adapt=mean_teacher", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                      "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "callbacks.test_figures=null",
                      "logger=none")
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    run_job(cfg)
    record = export_run(tmp_path / "export", run / "checkpoints" / "last.ckpt")
    assert record["status"] == "ok" and record["export"]["max_logit_difference"] <= 1e-3  # the teacher, on the target


@pytest.mark.slow
def test_a_sparse_model_is_refused_by_onnx_with_the_format_that_works(tmp_path):
    from experiments.pipeline.results import read_results

    from sklearn.datasets import dump_svmlight_file

    from experiments.datamodules.sparse import synthetic_sparse_classification

    matrix, labels = synthetic_sparse_classification(200, 500, density=0.02, n_classes=3, seed=0)
    dump_svmlight_file(matrix, labels, str(tmp_path / "rows.svm"))
    data = ["data=sparse", f"data.path={tmp_path / 'rows.svm'}", "model=sparse_mlp"]
    run = tmp_path / "sparse"
    run_job(compose_cfg(run, *data, "trainer.max_epochs=1", "logger=none", "callbacks.test_figures=null"))
    with pytest.raises(SystemExit):
        run_job(compose_cfg(tmp_path / "export", *data, "mode=export", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"))
    error = read_results(tmp_path / "export")["error"]
    assert "takes sparse inputs" in error and "export.format=safetensors" in error and "Traceback" not in error


# -- the standalone ONNX client ---------------------------------------------------------------------
CLIENT = Path(__file__).resolve().parents[1] / "deploy" / "onnx_predict.py"


def test_the_client_script_imports_only_onnxruntime_numpy_and_pillow():
    import ast

    tree = ast.parse(CLIENT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "json", "sys", "numpy", "onnxruntime", "PIL"}, imported


def files_of_other_sizes(folder: Path, count: int = 8) -> list[Path]:
    """Digits as files a user has: grey and RGB, PNG and JPEG, at sizes other than the data's 8x8."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    images = load_digits().images[:count] / 16.0
    sizes = [(8, 8), (13, 13), (24, 20), (40, 40), (11, 17), (64, 64), (30, 30), (9, 9)]
    files = []
    for i, image in enumerate(images):
        picture = Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").resize(sizes[i % len(sizes)], Image.BICUBIC)
        path = folder / (f"d{i}.jpg" if i % 4 == 3 else f"d{i}.png")
        (picture.convert("RGB") if i % 2 else picture).save(path, **({"quality": 92} if path.suffix == ".jpg" else {}))
        files.append(path)
    return files


@pytest.mark.parametrize("model", [
    ["data.image_size=20"],  # small_cnn, bilinear, 8 -> 20 px
    pytest.param(["model=efficientnet_lite0", "data.image_size=40", "finetune=classifier_only"], marks=pytest.mark.slow),  # bicubic, RGB
], ids=["small_cnn-20px", "efficientnet_lite0-40px"])
def test_the_standalone_client_gives_predicts_classes_on_files_of_other_sizes(tmp_path, model):
    """A model trained at a size other than the data's own: predict resizes a file to the data's
    size, then to the model's; the client follows the exported contract with Pillow and numpy."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    cfg = compose_cfg(run, *model, "trainer.max_epochs=2", "logger=none", "data.eval_batch_size=32")
    from omegaconf import OmegaConf

    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    ckpt = Path(run_job(cfg)["best_checkpoint"])
    files = files_of_other_sizes(tmp_path / "photos")
    run_job(compose_cfg(tmp_path / "predict", "mode=predict", f"ckpt_path={ckpt}", f"predict.inputs={tmp_path / 'photos'}"))
    predicted = {Path(r["input"]).name: r for r in read_rows(tmp_path / "predict" / "predictions.csv")}
    exported = run_job(compose_cfg(tmp_path / "export", "mode=export", f"ckpt_path={ckpt}", "export.check_batches=1"))
    done = subprocess.run([sys.executable, str(CLIENT), exported["export"]["path"], *map(str, files)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == [str(f) for f in files]
    for line in lines:
        path, name, probability = line.split(" ")
        row = predicted[Path(path).name]
        assert name == row["predicted"], (line, row)
        assert float(probability) == pytest.approx(float(row["probability"]), abs=2e-3)


def test_the_predictions_picture_shows_each_file_as_it_is_titled_in_the_csvs_order(tmp_path):
    """Panels in the CSV's order (an undecodable file keeps its place), titled with file name, class
    and probability; a white file is drawn white and a black one black (no min-max rescaling)."""
    from PIL import Image

    from experiments.reporting.predictions import PredictionsWriter

    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "white.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "black.png")
    names = [str(tmp_path / n) for n in ("white.png", "broken.png", "black.png")]
    writer = PredictionsWriter(tmp_path / "predictions.csv", ["zero", "one"], names, top_k=2, grid=16)
    writer.on_predict_start(None, None)
    probabilities = torch.tensor([[0.1, 0.9], [0.5, 0.5], [0.8, 0.2]])
    writer.write_on_batch_end(None, None, probabilities, None, (torch.zeros(3, 1, 8, 8), torch.arange(3), ["", "cannot decode: x", ""]), 0)
    writer.on_predict_end(None, None)
    rows = read_rows(tmp_path / "predictions.csv")
    assert [r["input"] for r in rows] == names and [r["predicted"] for r in rows] == ["one", "", "zero"]
    figure = writer.figure(channels=1)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["white.png\none 0.90", "broken.png\ncannot decode", "black.png\nzero 0.80"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    drawn = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
    def centre(ax):
        (x0, y0), (x1, y1) = ax.get_window_extent().get_points()
        return drawn[drawn.shape[0] - int((y0 + y1) / 2), int((x0 + x1) / 2)]
    assert (centre(figure.axes[0]) > 245).all() and (centre(figure.axes[2]) < 10).all()


def test_an_image_folder_runs_contract_has_only_steps_the_client_knows(tmp_path):
    """An image folder's evaluation transform (uint8-aware) still writes down as decode, resize,
    repeat, resize, normalise: no step a client would have to refuse."""
    from hydra.utils import instantiate
    from PIL import Image

    from experiments.datamodules.inputs import image_contract
    from experiments.pipeline.build import model_from_config

    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(tmp_path / "photos" / label / f"{i}.png")
    cfg = compose_cfg(tmp_path / "run", "data=image_folder", f"data.root={tmp_path / 'photos'}", "data.image_size=24",
                      "model=efficientnet_lite0")
    datamodule = instantiate(cfg.data)
    model = model_from_config(cfg.model, datamodule.num_classes, tuple(datamodule.input_shape))
    datamodule.set_preprocessing(model.preprocessing)
    steps = image_contract(datamodule)
    assert [s["op"] for s in steps] == ["decode", "resize", "resize", "normalize"], steps
    assert steps[2] == {"op": "resize", "size": [24, 24], "interpolation": "bicubic", "antialias": True}


def test_the_client_refuses_a_model_without_a_contract_or_with_a_step_it_does_not_know(tmp_path):
    """An ONNX file without the preprocessing metadata, or with a step the client cannot follow,
    stops with one line naming it, before any image is read."""
    import subprocess
    import sys

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])])
    bare = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    bare.ir_version = 8
    onnx.save(bare, tmp_path / "bare.onnx")
    unknown = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    unknown.ir_version = 8
    for key, value in (("preprocessing", json.dumps([{"op": "decode", "channels": 1}, {"op": "unsupported", "name": "Posterize"}])),
                       ("class_names", json.dumps(["a", "b"]))):
        entry = unknown.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(unknown, tmp_path / "unknown.onnx")
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    for model, message in (("bare.onnx", "carries no image preprocessing"), ("unknown.onnx", "a step this client does not know")):
        done = subprocess.run([sys.executable, str(CLIENT), str(tmp_path / model), str(tmp_path / "x.png")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
