"""Text classification data (``data=text``, ``data=rotten_tomatoes``, ``data=bbc_news``).

Texts come from a CSV / TSV / JSONL file (``data.text_column``, ``data.label_column``), a folder of
class sub-folders of ``.txt`` files, or either inside an installed distribution
(:mod:`experiments.datamodules.text_sources`). Two feature kinds (``data.features``):

* ``tokens``: token ids from the model's tokenizer (``model=hf_text`` says which). Each text is
  tokenized once, truncated to ``data.max_length``; an item is its ids padded to ``max_length``
  (every item has the same shape, as the Dataset contract wants) and :class:`TokenCollate` cuts each
  batch to its longest text (dynamic padding). Each split is sorted by length, so evaluation
  batches (and the feature cache's one embedding pass) carry little padding; training batches are
  drawn at random by the sampler as for every data option.
* ``tfidf``: scikit-learn's ``TfidfVectorizer`` rows as sparse vectors, batched as CSR (or
  ``data.sparse_format``) for ``model=sparse_mlp``. The vocabulary and IDF weights are fitted on the
  training split's texts (all of them, before ``samples_per_class``: they use no labels), never on
  validation or test texts.

The split is seeded (``data.seed``, ``val_fraction``, ``test_fraction``) and the same for both kinds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.sparse import FORMATS, SparseCollate, SparseRowDataset
from experiments.datamodules.text_sources import class_order, distribution_path, read_labelled_texts
from experiments.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FEATURES = ("tokens", "tfidf")
TFIDF_DEFAULTS = {"max_features": 50000, "ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}


class TokenDataset(Dataset):
    """Rows of ``input_ids`` ``(N, max_length)`` (right-padded) with integer ``labels``."""

    def __init__(self, input_ids: torch.Tensor, labels: torch.Tensor) -> None:
        if len(input_ids) != len(labels):
            raise DataError(f"{len(input_ids)} token rows but {len(labels)} labels")
        self.input_ids, self.labels = input_ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.input_ids[index], int(self.labels[index])


class TokenCollate:
    """Stack right-padded token rows and cut the batch to its longest text: ``(B, L_batch)`` ids.

    The model recovers the attention mask as ``ids != pad_token_id``. Picklable (runs in workers).
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.stack([x for x, _ in items])
        labels = torch.tensor([int(y) for _, y in items], dtype=torch.long)
        used = (ids != self.pad_token_id).any(dim=0).nonzero()
        length = int(used.max()) + 1 if len(used) else 1
        return ids[:, :length], labels


class TextDataModule(ClassificationDataModule):
    """Labelled texts as token ids (for ``model=hf_text``) or TF-IDF rows (for ``model=sparse_mlp``).

    Args:
        path: a ``.csv`` / ``.tsv`` / ``.jsonl`` file (also ``.gz``, ``.bz2``, ``.xz``) or a folder of
            class sub-folders of ``.txt`` files; with ``distribution``, a path inside it.
        distribution: read ``path`` from this installed Python distribution (never imported).
        text_column, label_column: the table's columns (ignored for folders).
        classes: keep only texts of these labels, class ``i`` being ``classes[i]``; ``None``: every
            label, sorted.
        samples_per_class: keep at most this many training texts per class (seeded); ``None``: all.
        max_length: tokens per text at most (longer texts are truncated).
        features: ``tokens`` or ``tfidf``.
        tfidf: ``TfidfVectorizer`` arguments (default: 50000 uni- and bigram features, min_df 2,
            sublinear tf).
        sparse_format: the TF-IDF batch layout: ``coo``, ``csr``, ``csc`` or ``dense``.
        kwargs: the loader and split options of :class:`ClassificationDataModule`.
    """

    input_kind = "text"

    def __init__(
        self,
        path: str,
        distribution: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        classes: list[str] | None = None,
        samples_per_class: int | None = None,
        max_length: int = 128,
        features: str = "tokens",
        tfidf: dict[str, Any] | None = None,
        sparse_format: str = "csr",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if features not in FEATURES:
            raise ConfigError(f"data.features={features!r} is invalid: expected one of {', '.join(FEATURES)}")
        if sparse_format not in FORMATS:
            raise ConfigError(f"data.sparse_format={sparse_format!r} is invalid: expected one of {', '.join(FORMATS)}")
        if samples_per_class is not None and samples_per_class < 1:
            raise ConfigError(f"data.samples_per_class={samples_per_class} must be >= 1 (or null for all)")
        if max_length < 2:
            raise ConfigError(f"data.max_length={max_length} must be >= 2 (a text needs its special tokens)")
        self.path = path
        self.distribution = distribution
        self.text_column, self.label_column = text_column, label_column
        self.classes = list(classes) if classes is not None else None
        self.samples_per_class = samples_per_class
        self.max_length = max_length
        self.features = features
        self.tfidf_options = {**TFIDF_DEFAULTS, **dict(tfidf or {})}
        self.sparse_format = sparse_format
        self._texts: list[str] | None = None
        self._labels: torch.Tensor | None = None
        self._class_names: list[str] = []
        self._tfidf = None  # SciPy CSR matrix of every text, once fitted
        #: the fitted ``TfidfVectorizer`` (``data.features=tfidf``), e.g. for its ``vocabulary_``
        self.vectorizer = None
        self._pad_token_id: int | None = None

    # -- what the base asks for ---------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        self._read()
        return len(self._class_names)

    def class_names(self) -> list[str]:
        self._read()
        return list(self._class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(max_length,)`` token ids, or ``(n_features,)`` TF-IDF columns."""
        if self.features == "tfidf":
            return (self._fit_tfidf().shape[1],)
        return (self.max_length,)

    def set_preprocessing(self, preprocessing) -> None:
        """Adopt the model's preprocessing; its tokenizer (a text model) is what ``tokens`` use."""
        if self.features == "tfidf" and getattr(preprocessing, "tokenizer", None):
            raise DataError(
                "data.features=tfidf gives sparse TF-IDF rows, but this model takes token ids; use "
                "data.features=tokens with a text model, or model=sparse_mlp for TF-IDF"
            )
        super().set_preprocessing(preprocessing)

    def load_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        splits = self._split_indices()
        if self.features == "tfidf":
            matrix = self._fit_tfidf()
            dense = self.sparse_format == "dense"
            make = lambda idx: SparseRowDataset.from_scipy(matrix[idx.numpy()], self._labels[idx].numpy(), dense=dense)  # noqa: E731
            return make(splits["train"]), make(splits["val"]), make(splits["test"])
        ids = self._tokenize()
        lengths = (ids != self._pad_token_id).sum(dim=1)

        def make(idx: torch.Tensor) -> TokenDataset:
            idx = idx[torch.argsort(lengths[idx], stable=True)]  # short to long: little padding per batch
            return TokenDataset(ids[idx], self._labels[idx])

        return make(splits["train"]), make(splits["val"]), make(splits["test"])

    def collate_fn(self):
        if self.features == "tfidf":
            return None if self.sparse_format == "dense" else SparseCollate(self.sparse_format)
        if self._pad_token_id is None:
            self._tokenizer()  # the pad id comes from the tokenizer
        return TokenCollate(self._pad_token_id)

    # -- reading, splitting, featurising --------------------------------------------------------------
    def _source(self) -> Path:
        if self.distribution:
            return distribution_path(self.distribution, self.path, self.name)
        return Path(self.path).expanduser()

    def _read(self) -> None:
        if self._texts is not None:
            return
        texts, labels = read_labelled_texts(self._source(), self.text_column, self.label_column)
        names = class_order(labels, self.classes)
        index = {name: i for i, name in enumerate(names)}
        kept = [i for i, label in enumerate(labels) if label in index]
        if len(kept) < len(labels):
            log.info("data %s: %d texts of other labels than data.classes left out", self.name, len(labels) - len(kept))
        self._texts = [texts[i] for i in kept]
        self._labels = torch.tensor([index[labels[i]] for i in kept], dtype=torch.long)
        self._class_names = names
        counts = torch.bincount(self._labels, minlength=len(names)).tolist()
        log.info("data %s: %d texts, classes %s", self.name, len(kept), dict(zip(names, counts)))

    def _split_indices(self) -> dict[str, torch.Tensor]:
        """Seeded ``train_all`` / ``train`` / ``val`` / ``test`` indices into the texts."""
        self._read()
        n = len(self._labels)
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n, generator=generator)
        n_test, n_val = round(n * self.test_fraction), round(n * self.val_fraction)
        if min(n_test, n_val) < 1 or n - n_test - n_val < 1:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} / data.test_fraction={self.test_fraction} leave an "
                f"empty split of {n} texts; use fractions that keep >= 1 text each"
            )
        test, val, train_all = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
        train = train_all
        if self.samples_per_class is not None:
            kept = [train_all[self._labels[train_all] == c][: self.samples_per_class] for c in range(self.num_classes)]
            train = torch.cat(kept)
            train = train[torch.randperm(len(train), generator=generator)]
        return {"train_all": train_all, "train": train, "val": val, "test": test}

    def _tokenizer(self):
        name = getattr(self.preprocessing, "tokenizer", None)
        if not name:
            raise DataError(
                f"data={self.name} with data.features=tokens needs the model's tokenizer: use a text model "
                "(model=hf_text), or data.features=tfidf with model=sparse_mlp"
            )
        from experiments.models.hf_text import load_tokenizer

        tokenizer = load_tokenizer(name)
        if tokenizer.pad_token_id is None:
            raise DataError(f"the tokenizer of {name} has no padding token: data={self.name} cannot batch its texts")
        self._pad_token_id = int(tokenizer.pad_token_id)
        return tokenizer

    def _tokenize(self) -> torch.Tensor:
        """``(N, L)`` right-padded ids of every text, ``L`` = ``max_length`` (or the model's limit)."""
        self._read()
        return self.encode(self._texts)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """``(N, L)`` right-padded token ids of ``texts`` as this data tokenizes its own (the model's
        tokenizer, truncated to ``max_length``); the pad id is :attr:`pad_token_id`."""
        if self.features != "tokens":
            raise ConfigError(f"data.features={self.features}: only token ids encode new texts; "
                              "predict the test split of a TF-IDF run instead (leave predict.inputs unset)")
        tokenizer = self._tokenizer()
        tokenizer.padding_side = "right"
        limit = min(self.max_length, int(getattr(tokenizer, "model_max_length", self.max_length) or self.max_length))
        encoded = tokenizer(
            texts, truncation=True, max_length=limit, padding="max_length",
            return_attention_mask=False, return_token_type_ids=False, return_tensors="pt",
        )
        ids = encoded["input_ids"].long()
        truncated = int(((ids != self._pad_token_id).sum(dim=1) == limit).sum())
        log.info("data %s: tokenized %d texts, max_length %d (%d truncated)", self.name, len(ids), limit, truncated)
        return ids

    @property
    def pad_token_id(self) -> int:
        """The padding id of the model's tokenizer (token batches are cut where it starts)."""
        if self._pad_token_id is None:
            self._tokenizer()
        return self._pad_token_id

    def _fit_tfidf(self):
        """The TF-IDF matrix of every text (SciPy CSR, float32), fitted on the training texts."""
        if self._tfidf is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            options = dict(self.tfidf_options)
            if "ngram_range" in options:
                options["ngram_range"] = tuple(options["ngram_range"])
            splits = self._split_indices()
            vectorizer = TfidfVectorizer(dtype=np.float32, **options)
            try:
                vectorizer.fit([self._texts[i] for i in splits["train_all"].tolist()])
            except ValueError as err:  # an empty vocabulary (e.g. min_df above the training texts)
                raise DataError(f"data.tfidf={options}: {err}; lower data.tfidf.min_df") from err
            self._tfidf = vectorizer.transform(self._texts).tocsr()
            self.vectorizer = vectorizer
            log.info("data %s: TF-IDF %d features, fitted on %d training texts", self.name, self._tfidf.shape[1], len(splits["train_all"]))
        return self._tfidf
