"""Sparse feature vectors end to end (``data=sparse``): file -> Dataset -> sparse batch.

Rows are read from an svmlight/libsvm text file or a SciPy ``.npz`` sparse matrix (with a labels
file) and held as one CSR matrix. An item is a 1-D sparse COO tensor ``(n_features,)``;
:class:`SparseCollate` builds the batch ``(B, n_features)`` directly in the configured layout (COO,
CSR or CSC), because PyTorch's default collate refuses sparse tensors. The dense matrix is never
built, neither here nor in ``model=sparse_mlp``; ``sparse_format=dense`` is the dense baseline.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from experiments.datamodules.base import ClassificationDataModule
from experiments.errors import DataError

log = logging.getLogger(__name__)

FORMATS = ("coo", "csr", "csc", "dense")
# Notices, not problems: CSR was chosen on purpose, and the tensors built here are valid by
# construction (torch warns when it rebuilds them in the main process without checking).
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


class SparseRowDataset(Dataset):
    """The rows of a CSR matrix with integer labels.

    Args:
        indptr, indices, values: the CSR arrays (row pointers, column indices, values).
        labels: ``(N,)`` class indices.
        n_features: the number of columns.
        dense: return dense rows (the baseline) instead of sparse COO vectors.
    """

    def __init__(
        self,
        indptr: torch.Tensor,
        indices: torch.Tensor,
        values: torch.Tensor,
        labels: torch.Tensor,
        n_features: int,
        dense: bool = False,
    ) -> None:
        if len(indptr) != len(labels) + 1:
            raise DataError(f"{len(indptr) - 1} rows of features but {len(labels)} labels")
        self.indptr, self.indices, self.values, self.labels = indptr, indices, values, labels
        self.n_features = n_features
        self.dense = dense

    @classmethod
    def from_scipy(cls, matrix, labels: np.ndarray, dense: bool = False) -> SparseRowDataset:
        csr = matrix.tocsr()
        csr.sum_duplicates()  # also sorts the column indices: rows become coalesced COO vectors
        return cls(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data.astype(np.float32)),
            torch.from_numpy(labels.astype(np.int64)),
            csr.shape[1],
            dense,
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        start, end = int(self.indptr[index]), int(self.indptr[index + 1])
        columns, values = self.indices[start:end], self.values[start:end]
        if self.dense:
            row = torch.zeros(self.n_features)
            row[columns] = values
        else:
            row = torch.sparse_coo_tensor(
                columns.unsqueeze(0), values, (self.n_features,), is_coalesced=True, check_invariants=False
            )
        return row, int(self.labels[index])


class SparseCollate:
    """Batch 1-D sparse COO items into one ``(B, n_features)`` sparse tensor of ``layout``.

    ``layout``: ``coo``, ``csr`` or ``csc``. CSR is built directly from the rows (row pointers are
    the cumulative row lengths); COO and CSC from the same arrays. Picklable (runs in workers).
    """

    def __init__(self, layout: str = "csr") -> None:
        if layout not in FORMATS[:3]:
            raise DataError(f"sparse layout {layout!r} is invalid: expected coo, csr or csc")
        self.layout = layout

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, labels = zip(*items)
        for position, row in enumerate(rows):
            if not isinstance(row, torch.Tensor) or row.layout != torch.sparse_coo or row.dim() != 1:
                kind = f"{row.layout} tensor of shape {tuple(row.shape)}" if isinstance(row, torch.Tensor) else type(row).__name__
                raise DataError(f"batch item {position} is a {kind}: SparseCollate takes 1-D sparse COO tensors")
        rows = [row if row.is_coalesced() else row.coalesce() for row in rows]
        n_features = rows[0].shape[0]
        lengths = torch.tensor([row._nnz() for row in rows])
        columns = torch.cat([row._indices()[0] for row in rows])
        values = torch.cat([row._values() for row in rows])
        size = (len(rows), n_features)
        if self.layout == "coo":
            row_ids = torch.repeat_interleave(torch.arange(len(rows)), lengths)
            batch = torch.sparse_coo_tensor(
                torch.stack([row_ids, columns]), values, size, is_coalesced=True, check_invariants=False
            )
        else:
            crow = torch.zeros(len(rows) + 1, dtype=torch.int64)
            torch.cumsum(lengths, 0, out=crow[1:])
            batch = torch.sparse_csr_tensor(crow, columns, values, size, check_invariants=False)
            if self.layout == "csc":
                batch = batch.to_sparse_csc()
        return batch, torch.as_tensor(labels, dtype=torch.long)


def synthetic_sparse_classification(
    n_samples: int,
    n_features: int,
    density: float = 0.01,
    n_classes: int = 4,
    signal: float = 0.3,
    seed: int = 0,
):
    """A sparse classification problem: ``(scipy CSR (n_samples, n_features) float32, labels)``.

    Each class owns a disjoint block of features; a row holds ``density * n_features`` non-zeros,
    ``signal`` of them drawn from its class's block and the rest from all features, so the label
    depends on which features are present. For demos, tests and benchmarks.
    """
    import scipy.sparse

    rng = np.random.default_rng(seed)
    per_row = max(1, round(density * n_features))
    from_class = max(1, round(signal * per_row))
    block = n_features // (2 * n_classes)
    labels = rng.integers(0, n_classes, n_samples)
    columns = np.concatenate(
        [
            labels[:, None] * block + rng.integers(0, block, (n_samples, from_class)),
            rng.integers(0, n_features, (n_samples, per_row - from_class)),
        ],
        axis=1,
    )
    rows = np.repeat(np.arange(n_samples), per_row)
    values = rng.uniform(0.5, 1.5, n_samples * per_row).astype(np.float32)
    matrix = scipy.sparse.csr_matrix((values, (rows, columns.ravel())), shape=(n_samples, n_features))
    matrix.sum_duplicates()
    return matrix, labels


def read_sparse(path: str, labels: str | None, key: str) -> tuple[object, np.ndarray]:
    """``(scipy CSR matrix, raw labels)`` from an svmlight/libsvm file or a ``.npz`` + labels file."""
    import scipy.sparse
    from sklearn.datasets import load_svmlight_file

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.{key}={path}: no such file ({file.resolve()})")
    label_key = key.replace("path", "labels")
    try:
        if file.suffix == ".npz":
            if labels is None:
                raise DataError(
                    f"data.{key}={path} is a .npz matrix, which holds no labels: give data.{label_key}=FILE "
                    "(.npy, or text with one label per line)"
                )
            matrix = scipy.sparse.load_npz(file).tocsr()
            label_file = Path(labels).expanduser()
            y = np.load(label_file) if label_file.suffix == ".npy" else np.loadtxt(label_file, ndmin=1)
        else:
            if labels is not None:
                raise DataError(f"data.{label_key}={labels}: an svmlight file carries its own labels; set it to null")
            matrix, y = load_svmlight_file(str(file))
    except DataError:
        raise
    except Exception as err:
        raise DataError(
            f"cannot read data.{key}={path} ({type(err).__name__}: {err}); expected an svmlight/libsvm "
            "text file or a scipy.sparse.save_npz .npz file"
        ) from err
    y = np.asarray(y).ravel()
    if matrix.shape[0] != len(y):
        raise DataError(f"data.{key}={path} has {matrix.shape[0]} rows but {len(y)} labels")
    return matrix, y


class SparseDataModule(ClassificationDataModule):
    """Sparse features from files; batches in ``sparse_format`` (``data=sparse``).

    Args:
        path: the training data: an svmlight/libsvm file, or a ``.npz`` sparse matrix
            (``scipy.sparse.save_npz``) with ``labels``.
        labels: for a ``.npz`` ``path``: a ``.npy`` or text file of one label per row.
        val_path, val_labels, test_path, test_labels: optional given splits in the same formats;
            missing ones are carved from the training data (seeded).
        n_features: the input width; ``None`` takes the widest file (svmlight files omit
            trailing all-zero columns, so give it when the files may be narrower than the data).
        sparse_format: the batch layout: ``coo``, ``csr``, ``csc`` or ``dense`` (the baseline).
        kwargs: the loader and split options of :class:`ClassificationDataModule`.

    Labels may be any integers (e.g. -1/+1); they are mapped to 0..K-1 in sorted order, and
    ``class_names`` gives the original values.
    """

    input_kind = "vectors"

    def __init__(
        self,
        path: str,
        labels: str | None = None,
        val_path: str | None = None,
        val_labels: str | None = None,
        test_path: str | None = None,
        test_labels: str | None = None,
        n_features: int | None = None,
        sparse_format: str = "csr",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if sparse_format not in FORMATS:
            raise DataError(f"data.sparse_format={sparse_format!r} is invalid: expected one of {', '.join(FORMATS)}")
        self.sources = {"path": (path, labels), "val_path": (val_path, val_labels), "test_path": (test_path, test_labels)}
        self.sparse_format = sparse_format
        self._n_features = n_features
        self._splits: dict[str, SparseRowDataset | None] | None = None
        self._classes: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        self._read()
        return len(self._classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self._read()["path"].n_features,)

    def class_names(self) -> list[str]:
        self._read()
        return [str(int(c)) for c in self._classes]

    def load_splits(self) -> tuple[Dataset, Dataset | None, Dataset | None]:
        splits = self._read()
        return splits["path"], splits["val_path"], splits["test_path"]

    def collate_fn(self) -> SparseCollate | None:
        return None if self.sparse_format == "dense" else SparseCollate(self.sparse_format)

    def _read(self) -> dict[str, SparseRowDataset | None]:
        """Read every file once: a common width, labels mapped to 0..K-1."""
        if self._splits is not None:
            return self._splits
        read = {key: read_sparse(p, lab, key) for key, (p, lab) in self.sources.items() if p is not None}
        empty = [f"data.{key}={self.sources[key][0]}" for key, (matrix, _) in read.items() if matrix.shape[0] == 0]
        if empty:
            raise DataError(f"{', '.join(empty)}: no rows (an svmlight file holds one 'label index:value ...' line "
                            "per row); give a file with rows")
        all_labels = np.concatenate([y for _, y in read.values()])
        if not np.all(np.equal(np.mod(all_labels, 1), 0)):
            raise DataError(f"data.path: labels must be integer classes, found {all_labels[np.mod(all_labels, 1) != 0][:3]}")
        self._classes = np.unique(all_labels)
        widest = max(m.shape[1] for m, _ in read.values())
        n_features = self._n_features or widest
        if n_features < widest:
            raise DataError(f"data.n_features={n_features} but the files have {widest} columns; raise it or set null")
        self._splits = {key: None for key in self.sources}
        for key, (matrix, y) in read.items():
            matrix.resize((matrix.shape[0], n_features))
            mapped = np.searchsorted(self._classes, y)
            self._splits[key] = SparseRowDataset.from_scipy(matrix, mapped, dense=self.sparse_format == "dense")
        density = sum(d.values.numel() for d in self._splits.values() if d) / max(
            1, sum(len(d) for d in self._splits.values() if d) * n_features
        )
        log.info(
            "sparse data: %d features, %d classes %s, density %.4f%%, batches as %s",
            n_features, len(self._classes), self._classes[:10].tolist(), 100 * density, self.sparse_format,
        )
        return self._splits
