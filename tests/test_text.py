"""Generic text data (datamodules.text): a CSV with other column names and three classes,
train/<label>/*.txt folders, unlabelled texts for the LM stage, bad input, both stages through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datamodules.base import DataError
from datamodules.text import TextDataModule
from recheck import assert_metrics_recomputed

TOPICS = {
    "cooking": ["recipe", "oven", "garlic", "simmer", "flour", "butter", "onions", "sauce"],
    "sports": ["match", "goal", "coach", "league", "referee", "striker", "season", "stadium"],
    "travel": ["flight", "hotel", "beach", "passport", "museum", "train", "luggage", "harbour"],
}
FILLER = ["the", "a", "today", "really", "we", "talked", "about", "again", "and", "then"]


def topic_text(rng: np.random.Generator, topic: str, k: int) -> str:
    words = list(rng.choice(TOPICS[topic], 5)) + list(rng.choice(FILLER, 4))
    return f"Note {k}: " + " ".join(rng.permutation(words).tolist()) + ".<br />The end."


def write_topics_csv(root: Path, n: int = 30, header=("body", "topic", "holdout"), name: str = "notes.csv", empty_labels: int = 0) -> Path:
    """A CSV ``body, topic, holdout`` (every fifth row held out), three topics in turn;
    the last ``empty_labels`` rows have no topic."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        topic = list(TOPICS)[k % 3]
        rows.append([topic_text(rng, topic, k), "" if k >= n - empty_labels else topic, "yes" if k % 5 == 4 else "no"])
    with open(root / name, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return root / name


def write_topic_folders(root: Path, per_class: int = 6, valid: bool = True, test: bool = True, unlabelled: int = 4) -> Path:
    """``train/<topic>/*.txt``, optional ``valid/<topic>/``, ``test/<topic>/`` and ``unlabelled/``."""
    rng = np.random.default_rng(1)
    k = 0
    for split, n in (("train", per_class), ("valid", 2 if valid else 0), ("test", 2 if test else 0)):
        for topic in TOPICS if n else []:
            d = root / split / topic
            d.mkdir(parents=True)
            for j in range(n):
                (d / f"{j}.txt").write_text(topic_text(rng, topic, k), encoding="utf-8")
                k += 1
    if unlabelled:
        (root / "unlabelled").mkdir(parents=True)
        for j in range(unlabelled):
            (root / "unlabelled" / f"u{j}.txt").write_text(topic_text(rng, list(TOPICS)[j % 3], 1000 + j), encoding="utf-8")
    return root


def csv_dm(root: Path, **kw) -> TextDataModule:
    return TextDataModule(root=str(root), text_column="body", label_column="topic", split="column:holdout", num_workers=0, max_length=32, **kw)


# -- CSV ---------------------------------------------------------------------------------
def test_csv_with_other_columns_and_three_classes(tmp_path):
    path = write_topics_csv(tmp_path / "notes")
    dm = csv_dm(path.parent)
    assert dm.layout == ("csv", path)  # the only CSV in the root
    assert dm.classes == ["cooking", "sports", "travel"] and dm.num_classes == 3  # inferred, sorted, before setup
    dm.setup("fit")
    train, valid = dm.datasets["train"].reviews, dm.datasets["valid"].reviews
    assert len(train) == 24 and len(valid) == 6
    assert valid.names == [f"row {k + 1}" for k in range(30) if k % 5 == 4]
    df = pd.read_csv(path)
    for texts in (train, valid):
        for name, y in zip(texts.names, texts.labels):
            assert dm.classes[y] == df.topic[int(name.split()[1]) - 1]
    assert "<br" not in train.texts[0] and train.texts[0].endswith("The end.")
    item = dm.datasets["train"][0]
    assert len(item["input_ids"]) <= 32 and 0 <= item["label"] < 3
    dm.setup("test")
    assert dm.datasets["test"].reviews.names == valid.names  # a CSV's test split: its validation rows


def test_csv_classes_given_keep_their_order_and_random_split(tmp_path):
    path = write_topics_csv(tmp_path / "d", header=("text", "label", "holdout"), name="data.csv")
    write_topics_csv(tmp_path / "d", n=3, name="other.csv")  # two CSVs: csv must name one
    with pytest.raises(DataError, match=r"no text data found.*found 2 CSV files"):
        TextDataModule(root=str(tmp_path / "d"), num_workers=0).setup("fit")
    dm = TextDataModule(root=str(path.parent), csv="data.csv", classes=["travel", "sports", "cooking"], valid_pct=0.25, num_workers=0)
    dm.setup("fit")
    train, valid = dm.datasets["train"].reviews, dm.datasets["valid"].reviews
    assert len(valid) == 8 and len(train) == 22 and not set(train.names) & set(valid.names)  # random: no is_valid column
    df = pd.read_csv(path)
    assert all(["travel", "sports", "cooking"][y] == df.label[int(n.split()[1]) - 1] for n, y in zip(train.names, train.labels))
    again = TextDataModule(root=str(path.parent), csv=str(path), valid_pct=0.25, seed=1, num_workers=0)
    again.setup("fit")
    assert again.datasets["valid"].reviews.names != valid.names  # the seed decides


def test_unlabelled_rows_feed_only_the_language_model(tmp_path):
    path = write_topics_csv(tmp_path / "u", n=30, empty_labels=6)
    with pytest.raises(DataError, match=r"notes.csv row 25: label '' is not one of .*allow_unlabelled true"):
        csv_dm(path.parent).setup("fit")
    dm = csv_dm(path.parent, allow_unlabelled=True)
    dm.setup("fit")
    names = dm.datasets["train"].reviews.names + dm.datasets["valid"].reviews.names
    assert len(names) == 24 and all(int(n.split()[1]) <= 24 for n in names)
    lm = TextDataModule(root=str(path.parent), text_column="body", label_column="none", lm=True, valid_pct=0.1, num_workers=0)
    lm.setup("fit")  # the LM stage needs no label column
    texts = lm.datasets["train"].reviews + lm.datasets["valid"].reviews
    assert len(texts) == 30 and set(texts.labels) == {-1} and len(lm.datasets["valid"]) == 3


# -- folders -----------------------------------------------------------------------------
def test_folders_with_valid_test_and_unlabelled(tmp_path):
    root = write_topic_folders(tmp_path / "f")
    dm = TextDataModule(root=str(root), num_workers=0, max_length=32)
    assert dm.layout == ("folders", root) and dm.classes == ["cooking", "sports", "travel"]
    dm.setup("fit")
    train, valid = dm.datasets["train"].reviews, dm.datasets["valid"].reviews
    assert len(train) == 18 and len(valid) == 6  # by folder: valid/ exists
    assert all(n.startswith("train/") for n in train.names) and all(n.startswith("valid/") for n in valid.names)
    assert all(n.split("/")[1] == dm.classes[y] for n, y in zip(train.names + valid.names, train.labels + valid.labels))
    dm.setup("test")
    assert len(dm.datasets["test"]) == 6 and all(n.startswith("test/") for n in dm.datasets["test"].reviews.names)
    lm = TextDataModule(root=str(root), lm=True, valid_pct=0.2, num_workers=0)
    lm.setup("fit")
    texts = lm.datasets["train"].reviews + lm.datasets["valid"].reviews
    assert len(texts) == 18 + 6 + 6 + 4 and sum(n.startswith("unlabelled/") for n in texts.names) == 4


def test_folders_without_valid_split_randomly_and_by_names(tmp_path):
    root = write_topic_folders(tmp_path / "f", valid=False, test=False, unlabelled=0)
    dm = TextDataModule(root=str(root), valid_pct=0.25, num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["valid"]) == 18 and len(dm.datasets["valid"]) == 4
    dm.setup("test")  # no test/ folder: the validation texts
    assert dm.datasets["test"].reviews.names == dm.datasets["valid"].reviews.names
    (root / "valid.txt").write_text("train/sports/0.txt\ntrain/travel/1.txt\n")
    named = TextDataModule(root=str(root), split="names:valid.txt", num_workers=0)
    named.setup("fit")
    assert named.datasets["valid"].reviews.names == ["train/sports/0.txt", "train/travel/1.txt"]


def test_predict_path_csv_with_its_text_column(tmp_path):
    root = write_topics_csv(tmp_path / "p").parent
    new = tmp_path / "new.csv"
    new.write_text("body\nA garlic sauce in the oven.\nThe striker scored a goal.\n")
    dm = csv_dm(root, predict_path=str(new))
    dm.setup("predict")
    assert dm.datasets["predict"].reviews.names == ["row 1", "row 2"] and dm.datasets["predict"].reviews.labels == [-1, -1]


def test_imdb_is_a_preset_of_the_generic_reader(tmp_path):
    from datamodules.imdb import IMDBDataModule
    from datamodules.imdb_sample import write_imdb_sample

    root = tmp_path / "imdb"
    write_imdb_sample(root, n=40, n_valid=8, seed=1)
    generic, imdb = TextDataModule(root=str(root), num_workers=0), IMDBDataModule(root=str(root), num_workers=0)
    assert generic.classes == imdb.classes == ["negative", "positive"]  # found in texts.csv / given
    for dm in (generic, imdb):
        dm.setup("fit")
    for s in ("train", "valid"):
        a, b = generic.datasets[s].reviews, imdb.datasets[s].reviews
        assert (a.names, a.labels, a.texts) == (b.names, b.labels, b.texts) and len(a)
    assert len(imdb.datasets["valid"]) == 8  # by is_valid, without a split option
    assert TextDataModule().classes == ["negative", "positive"]  # no root: the built-in IMDB sample


# -- bad input: one line naming the file (and row) -----------------------------------------
def test_bad_csvs_are_one_clear_line(tmp_path):
    path = write_topics_csv(tmp_path / "b")
    with pytest.raises(DataError, match=r"notes.csv: missing column\(s\) \['text'\].*text_column"):
        TextDataModule(root=str(path.parent), label_column="topic", num_workers=0).setup("fit")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[3, "body"] = " <br /> "
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"notes.csv row 4: empty text in column 'body'"):
        csv_dm(path.parent).setup("fit")
    df.loc[3, "body"] = "fixed"
    df.loc[6, "topic"] = "gardening"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"notes.csv row 7: label 'gardening' is not one of \['cooking', 'sports', 'travel'\]; fix it, or add it to --data.init_args.classes"):
        csv_dm(path.parent, classes=["cooking", "sports", "travel"]).setup("fit")
    df.loc[6, "topic"], df.loc[8, "holdout"] = "sports", "perhaps"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"notes.csv row 9: holdout 'perhaps' is not True/False"):
        csv_dm(path.parent).setup("fit")
    with pytest.raises(DataError, match=r"notes.csv: no column 'nope' to split by"):
        TextDataModule(root=str(path.parent), text_column="body", label_column="topic", split="column:nope").setup("fit")
    path.write_bytes(path.read_bytes().replace(b"Note 5", b"N\xf6te 5"))
    with pytest.raises(DataError, match=r"notes.csv: not UTF-8 text \(byte \d+, line 7\)"):
        csv_dm(path.parent).setup("fit")


def test_bad_folders_are_one_clear_line(tmp_path):
    root = write_topic_folders(tmp_path / "b", test=False, unlabelled=0)
    (root / "train" / "gardening").mkdir()
    (root / "train" / "gardening" / "notes.md").write_text("not a .txt")
    with pytest.raises(DataError, match=r"train/gardening: label folder with no .txt files"):
        TextDataModule(root=str(root), num_workers=0).setup("fit")
    (root / "train" / "gardening" / "0.txt").write_text("Roses and tulips.")
    with pytest.raises(DataError, match=r"train/gardening: label folder 'gardening' is not one of the classes"):
        TextDataModule(root=str(root), classes=["cooking", "sports", "travel"], num_workers=0).setup("fit")
    (root / "train" / "sports" / "1.txt").write_bytes(b"\xff\xfe bad bytes")
    with pytest.raises(DataError, match=r"sports/1.txt: not UTF-8"):
        TextDataModule(root=str(root), num_workers=0).setup("fit")
    (root / "train" / "sports" / "1.txt").write_text("  <br />  ")
    with pytest.raises(DataError, match=r"sports/1.txt: empty text"):
        TextDataModule(root=str(root), num_workers=0).setup("fit")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match=r"nothing: no text data found"):
        TextDataModule(root=str(tmp_path / "nothing")).setup("fit")
    with pytest.raises(DataError, match=r"classes \['a', 'a'\]: give two or more classes, each once"):
        TextDataModule(classes=["a", "a"])
    one = write_topics_csv(tmp_path / "one", n=3)
    one.write_text("body,topic\nfirst text,cooking\nsecond text,cooking\n")
    with pytest.raises(DataError, match=r"one.*notes.csv: only the label \['cooking'\] found; classification needs two or more"):
        TextDataModule(root=str(one.parent), text_column="body", label_column="topic").setup("fit")


# -- the CLI: classifier on three classes, both layouts; the LM stage ---------------------------
FAST = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
        "--data.init_args.batch_size", "4", "--data.init_args.max_length", "32", "--data.init_args.num_workers", "0"]
CSV_ARGS = ["--data.init_args.text_column", "body", "--data.init_args.label_column", "topic", "--data.init_args.split", "column:holdout"]


@pytest.mark.slow
def test_cli_classifier_on_a_three_class_csv_then_predict(run_cli, tmp_path):
    root = write_topics_csv(tmp_path / "notes").parent
    cli, run = run_cli(["--task", "text", "--data.init_args.root", str(root), *CSV_ARGS, *FAST])
    assert cli.model.num_classes == 3 and cli.model.class_names == ["cooking", "sports", "travel"]
    assert cli.model.net.head[-1].out_features == 3
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert_metrics_recomputed(cli, metrics, ("val/acc", "val/loss"))  # the final weights on the held-out rows
    table = pd.read_csv(run / "pictures" / "most_wrong.csv")
    assert set(table.truth) | set(table.prediction) <= set(TOPICS)
    new = tmp_path / "new.csv"
    new.write_text("body\nA garlic sauce in the oven.\nThe striker scored a goal.\nOur flight to the beach hotel.\n")
    _, pred = run_cli(["predict", "--task", "text", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                       "--data.init_args.root", str(root), *CSV_ARGS, "--data.init_args.predict_path", str(new)])
    out = pd.read_csv(pred / "predictions" / "predictions.csv")
    assert out.review.tolist() == ["row 1", "row 2", "row 3"] and set(out.label) <= set(TOPICS)
    assert out.probability.between(0.33, 1).all()


@pytest.mark.slow
def test_cli_classifier_on_folders(run_cli, tmp_path):
    root = write_topic_folders(tmp_path / "f")
    cli, run = run_cli(["--task", "text", "--data.init_args.root", str(root), *FAST])
    assert cli.model.class_names == ["cooking", "sports", "travel"]
    assert_metrics_recomputed(cli, json.loads((run / "metrics.json").read_text())["metrics"], ("val/acc", "val/loss"))


@pytest.mark.slow
def test_cli_language_model_on_the_csv_with_unlabelled_rows(run_cli, tmp_path):
    root = write_topics_csv(tmp_path / "lm", empty_labels=6).parent
    cli, run = run_cli(["--task", "text_lm", "--data.init_args.root", str(root), "--data.init_args.text_column", "body", *FAST])
    assert len(cli.datamodule.datasets["train"]) + len(cli.datamodule.datasets["valid"]) == 30  # unlabelled rows too
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    # accuracy and perplexity at the masked tokens (the batch-seeded validation masks), computed here
    assert_metrics_recomputed(cli, metrics, ("val/acc", "val/perplexity"))
    assert (run / "encoder" / "model.safetensors").is_file()
