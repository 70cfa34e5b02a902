"""Sparse inputs end to end: svmlight/.npz files -> sparse batches -> model=sparse_mlp, never densified."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch
from conftest import run_job
from sklearn.datasets import dump_svmlight_file

from experiments.pipeline.build import model_from_config
from experiments.datamodules import CustomDataModule, SparseCollate, SparseDataModule
from experiments.datamodules.sparse import SparseRowDataset, synthetic_sparse_classification
from experiments.errors import DataError
from experiments.models.sparse_mlp import SparseLinear

LAYOUTS = {"coo": torch.sparse_coo, "csr": torch.sparse_csr, "csc": torch.sparse_csc, "dense": torch.strided}


@pytest.fixture(scope="module")
def svmlight(tmp_path_factory):
    """1200 rows x 10000 features at 1% density, 4 classes that depend on the features present."""
    matrix, labels = synthetic_sparse_classification(1200, 10_000, density=0.01, n_classes=4, seed=3)
    path = tmp_path_factory.mktemp("sparse") / "train.svm"
    dump_svmlight_file(matrix, labels, str(path))
    return path


@pytest.mark.parametrize("fmt", ["coo", "csr", "csc"])
def test_sparse_training_beats_chance_and_never_densifies(make_cfg, tmp_path, svmlight, fmt):
    seen = []

    def record(module, args):
        if isinstance(module, SparseLinear):
            seen.append(args[0].layout)

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        cfg = make_cfg(
            "data=sparse", f"data.path={svmlight}", f"data.sparse_format={fmt}", "model=sparse_mlp",
            "finetune=scratch", "model.net.hidden=[64]", "trainer.max_epochs=2", "logger=none", "optimizer.lr=3e-3",
        )
        record_ = run_job(cfg)
    finally:
        hook.remove()
    assert record_["status"] == "ok"
    assert record_["data"]["input_shape"] == [10_000] and record_["data"]["num_classes"] == 4
    assert record_["metrics"]["test/acc"] > 0.7  # 4 classes: chance is 0.25
    assert seen and set(seen) == {LAYOUTS[fmt]}  # every batch reached the first layer sparse


def test_batches_from_workers_match_the_main_process(svmlight):
    def batches(workers):
        dm = SparseDataModule(str(svmlight), sparse_format="csr", batch_size=100, shuffle=False, num_workers=workers, seed=1)
        dm.setup()
        return list(dm.train_dataloader())

    single, multi = batches(0), batches(2)
    assert len(single) == len(multi) > 1
    for (xa, ya), (xb, yb) in zip(single, multi):
        assert xb.layout == torch.sparse_csr and xb.shape[1] == 10_000
        assert torch.equal(ya, yb)
        assert torch.equal(xa.crow_indices(), xb.crow_indices()) and torch.equal(xa.values(), xb.values())


@pytest.mark.parametrize("fmt", LAYOUTS)
def test_every_format_holds_the_same_rows(svmlight, fmt):
    dm = SparseDataModule(str(svmlight), sparse_format=fmt, batch_size=8, shuffle=False)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.layout == LAYOUTS[fmt] and x.shape == (8, 10_000) and y.dtype == torch.long
    source, _ = next(iter(SparseDataModule(str(svmlight), sparse_format="dense", batch_size=8, shuffle=False).train_dataloader()))
    assert torch.equal(x.to_dense(), source)  # to_dense only here, to compare small batches


def test_npz_matrix_with_a_labels_file(tmp_path):
    matrix, labels = synthetic_sparse_classification(200, 3000, density=0.02, n_classes=2, seed=0)
    scipy.sparse.save_npz(tmp_path / "x.npz", matrix)
    np.save(tmp_path / "y.npy", np.where(labels == 1, 1, -1))  # -1/+1 labels map to classes 0/1
    dm = SparseDataModule(str(tmp_path / "x.npz"), labels=str(tmp_path / "y.npy"), sparse_format="coo")
    assert dm.num_classes == 2 and dm.input_shape == (3000,) and dm.class_names() == ["-1", "1"]
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.layout == torch.sparse_coo and set(y.tolist()) <= {0, 1}
    with pytest.raises(DataError, match=r"data\.path=.*x\.npz is a \.npz matrix, which holds no labels: give data\.labels="):
        SparseDataModule(str(tmp_path / "x.npz")).setup()
    with pytest.raises(DataError, match=r"data\.path=.*missing\.svm: no such file"):
        SparseDataModule(str(tmp_path / "missing.svm")).num_classes


def test_default_collate_refuses_sparse_items_with_a_clear_message():
    matrix, labels = synthetic_sparse_classification(40, 500, n_classes=2)
    rows = SparseRowDataset.from_scipy(matrix, labels)
    with pytest.raises(DataError, match=r"collate_fn default_collate failed on a batch: .*sparse"):
        CustomDataModule(rows, num_classes=2, batch_size=8).setup()
    dm = CustomDataModule(rows, num_classes=2, batch_size=8, collate_fn=SparseCollate("csc"))
    dm.setup()
    assert next(iter(dm.train_dataloader()))[0].layout == torch.sparse_csc


def test_sparse_mlp_also_takes_dense_images(make_cfg):
    cfg = make_cfg("model=sparse_mlp")
    model = model_from_config(cfg.model, 10, (1, 8, 8))
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    assert [b.name for b in model.blocks] == ["input"]
