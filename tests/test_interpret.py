"""Interpretation: the statistics on hand-made tensors, and every collector on a model whose answers
are known exactly (planted errors at the top); the CLI is in test_interpret_cli.py."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support
from torch import nn
from torchmetrics.classification import MulticlassJaccardIndex

from callbacks.interpret import write_report
from tasks import interpret as st
from tasks.interpret_collect import InterpretError, collect
from tasks.planet import PlanetTask
from tasks.pointreg import PointRegressionTask, to_pixels
from tasks.segmentation import SegmentationTask
from tasks.text import TextClassificationTask


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- the statistics ----------------------------------------------------------------------
def test_topk_keeps_the_highest_and_the_first_of_ties():
    top = st.TopK(3)
    top.update(torch.tensor([0.1, 0.9, 0.5]), {"name": ["a", "b", "c"], "x": torch.arange(3)})
    top.update(torch.tensor([0.9, 0.2, 0.7]), {"name": ["d", "e", "f"], "x": torch.arange(3, 6)})
    items = top.items()
    assert [i["name"] for i in items] == ["b", "d", "f"] and [int(i["x"]) for i in items] == [1, 3, 5]
    assert items[0]["score"] == pytest.approx(0.9)


def test_tag_table_and_missed_added_against_hand_counts_and_sklearn():
    t = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    d = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]]).bool()
    rows = st.tag_table(d, t, ["a", "b", "c"], [0.2, 0.3, 0.4])
    p, r, f, _ = precision_recall_fscore_support(t.numpy(), d.numpy(), beta=2, average=None, zero_division=np.nan)
    for row, pp, rr, ff in zip(rows, p, r, f):
        assert row["precision"] == pytest.approx(pp, abs=1e-4) and row["recall"] == pytest.approx(rr, abs=1e-4) and row["f2"] == pytest.approx(ff, abs=1e-4)
    assert (rows[0]["tp"], rows[0]["fp"], rows[0]["fn"], rows[0]["threshold"]) == (2, 0, 1, 0.2)
    miss = {r["tag"]: (r["missed"], r["added"]) for r in st.missed_and_added(d, t, ["a", "b", "c"])}
    assert miss == {"a": (1, 0), "b": (0, 1), "c": (1, 0)}
    # image 0 missed c while b was added; image 3 missed a with nothing added
    m = st.missed_added_matrix(d, t)
    assert m.tolist() == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
    pairs = st.confused_pairs(m, ["a", "b", "c"], ["a", "b", "c", "(nothing)"])
    assert {(q["truth"], q["predicted"], q["count"]) for q in pairs} == {("a", "(nothing)", 1), ("c", "b", 1)}


def test_confusion_class_table_and_most_confused_match_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    m = st.confusion_matrix(torch.tensor(p), torch.tensor(y), 4)
    assert m.tolist() == sk_confusion(y, p, labels=range(4)).tolist()
    pr, rc, f, _ = precision_recall_fscore_support(y, p, beta=2, labels=range(4), zero_division=0)
    rows = st.class_table(m, list("abcd"))
    assert [r["f2"] for r in rows] == pytest.approx(f.tolist(), abs=1e-4) and [r["recall"] for r in rows] == pytest.approx(rc.tolist(), abs=1e-4)
    pairs = st.confused_pairs(m, list("abcd"), list("abcd"))
    assert len(pairs) == 12 and pairs[0]["count"] == max(m[i, j] for i in range(4) for j in range(4) if i != j)
    assert all(a["count"] >= b["count"] for a, b in zip(pairs, pairs[1:]))
    assert st.row_normalise(m).sum(1).tolist() == pytest.approx([1.0] * 4)


def test_segmentation_tables_match_torchmetrics_and_hand_values():
    rng = np.random.default_rng(1)
    y = torch.tensor(rng.integers(0, 5, (3, 8, 8)))
    p = torch.tensor(rng.integers(0, 5, (3, 8, 8)))
    m = st.confusion_matrix(p, y, 5, ignore_index=4)
    rows = st.iou_table(m, list("abcde"), void_index=4)
    ref = MulticlassJaccardIndex(5, average="none", ignore_index=4)(p, y)
    assert [r["class"] for r in rows] == list("abcd") and [r["iou"] for r in rows] == pytest.approx(ref[:4].tolist(), abs=1e-4)
    assert st.segmentation_summary(m, 4)["pixel_acc"] == pytest.approx(float(((p == y) & (y != 4)).sum() / (y != 4).sum()), abs=1e-4)
    # truth all class 0; prediction: left half 0, right half 1 -> IoU(0) = 1/2, IoU(1) = 0, mean 1/4
    truth = torch.zeros(1, 4, 4, dtype=torch.long)
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[..., 2:] = 1
    iou, acc = st.per_image_iou(pred, truth, 3)
    assert iou.tolist() == pytest.approx([0.25]) and acc.tolist() == pytest.approx([0.5])
    truth[..., 2:] = 2  # now void there: the prediction is right on every counted pixel
    iou, acc = st.per_image_iou(pred, truth, 3, ignore_index=2)
    assert iou.tolist() == pytest.approx([1.0]) and acc.tolist() == pytest.approx([1.0])  # void pixels count for no class


def test_percentiles_histogram_wrong_and_lengths():
    e = torch.arange(101, dtype=torch.float)
    rows = {r["statistic"]: r["error_px"] for r in st.percentile_table(e)}
    assert rows["p50"] == 50 and rows["p90"] == 90 and rows["p100"] == 100 and rows["mean"] == 50
    assert sum(r["count"] for r in st.histogram(e, 10)) == 101
    wrong = st.most_confidently_wrong(["r1", "r2", "r3"], ["e1", "e2", "e3"], torch.tensor([0, 1, 0]), torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]]), ["neg", "pos"], 5)
    assert [w["review"] for w in wrong] == ["r1", "r2"] and [w["probability"] for w in wrong] == [0.8, 0.6]
    lengths = torch.tensor([10, 20, 30, 40, 50, 60, 70, 80])
    by = st.errors_by_length(lengths, torch.tensor([0, 0, 0, 0, 0, 0, 1, 1]).bool(), buckets=4)
    assert [r["samples"] for r in by] == [2, 2, 2, 2] and [r["errors"] for r in by] == [0, 0, 0, 2]
    assert by[-1]["error_rate"] == 1.0 and by[-1]["share_of_errors"] == 1.0 and by[0]["length"] == "10-29"


def test_markdown_table_escapes_and_shows_undefined():
    md = st.markdown_table([{"a": "x|y", "b": None, "c": 0.5}])
    assert md.splitlines() == ["| a | b | c |", "|---|---|---|", "| x\\|y | - | 0.5000 |"]


# -- collectors on models whose answers are known ------------------------------------------
class CodeNet(nn.Module):
    """Logits read from the image: channel 0 of row 0 is 255 at the columns of the classes that are on."""

    def __init__(self, n: int, scale: float = 4.0):
        super().__init__()
        self.n, self.scale = n, scale
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return (x[:, 0, 0, : self.n].float() / 255 * 2 - 1) * self.scale + self.bias


def coded_images(codes: torch.Tensor, width: int = 32) -> torch.Tensor:
    x = torch.zeros(len(codes), 3, 8, width, dtype=torch.uint8)
    x[:, 0, 0, : codes.shape[1]] = codes.to(torch.uint8) * 255
    x[:, 1] = 90  # something to see in the pictures
    return x


def batches_of(data: dict, size: int = 4) -> list[dict]:
    n = len(data["name"])
    return [{k: v[i : i + size] for k, v in data.items()} for i in range(0, n, size)]


def test_multilabel_planted_complement_tops_the_losses(tmp_path):
    tags = torch.tensor(np.random.default_rng(0).integers(0, 2, (12, 5)))
    tags[5] = torch.tensor([1, 1, 0, 0, 0])
    target = tags.clone().float()
    target[5] = 1 - target[5]  # the planted error: every tag of image 5 flipped
    task = PlanetTask(CodeNet(5), num_classes=5, class_names=list("abcde"))
    rep = collect(task, batches_of({"image": coded_images(tags), "target": target, "name": [f"img{i}" for i in range(12)]}), k=3)
    top = rep.tables["top_losses"]
    assert top[0]["name"] == "img5" and top[0]["loss"] == pytest.approx(math.log1p(math.exp(4)), abs=1e-3)
    assert top[1]["loss"] == pytest.approx(math.log1p(math.exp(-4)), abs=1e-3) and top[0]["truth"] == "c d e" and top[0]["prediction"] == "a b"
    missed = {r["tag"]: (r["missed"], r["added"]) for r in rep.tables["missed_added"]}
    assert missed == {"a": (0, 1), "b": (0, 1), "c": (1, 0), "d": (1, 0), "e": (1, 0)}
    assert {(p["truth"], p["predicted"]) for p in rep.tables["confused_pairs"]} == {(m, a) for m in "cde" for a in "ab"}
    assert rep.summary["f2_samples"] == pytest.approx(11 / 12, abs=1e-4)
    rows = {r["tag"]: r for r in rep.tables["tags"]}
    assert rows["a"]["threshold"] == 0.2 and rows["a"]["fp"] == 1 and rows["a"]["tp"] == int(tags[:, 0].sum()) - 1
    readme = Path(write_report(rep, tmp_path / "out"))
    assert {p.name for p in readme.parent.iterdir()} >= {"README.md", "summary.json", "tags.csv", "missed_added.csv", "confused_pairs.csv", "top_losses.csv", "top_losses.png", "confusion.png"}
    assert read_csv(readme.parent / "top_losses.csv")[0]["name"] == "img5" and "| tag | threshold |" in readme.read_text()


def test_single_label_planted_wrong_label_tops_the_losses(tmp_path):
    ClassificationTask = pytest.importorskip("tasks.classify").ClassificationTask
    cls = torch.tensor([0, 1, 2] * 4)
    target = cls.clone()
    target[7] = 0  # image 7 shows class 1, labelled 0
    task = ClassificationTask(CodeNet(3), num_classes=3, class_names=["bear", "guitar", "mushroom"])
    rep = collect(task, batches_of({"image": coded_images(F.one_hot(cls, 3)), "target": target, "name": [f"img{i}" for i in range(12)]}), k=4)
    top = rep.tables["top_losses"]
    assert top[0]["name"] == "img7" and (top[0]["truth"], top[0]["prediction"]) == ("bear", "guitar")
    assert rep.tables["most_confused"] == [{"truth": "bear", "predicted": "guitar", "count": 1, "share_of_truth": 0.2}]
    assert rep.summary["accuracy"] == pytest.approx(11 / 12, abs=1e-4)
    assert [r["recall"] for r in rep.tables["classes"]] == pytest.approx([0.8, 1.0, 1.0])
    out = Path(write_report(rep, tmp_path / "out")).parent
    assert (out / "confusion.png").stat().st_size > 1000 and (out / "top_losses.png").is_file()
    assert read_csv(out / "confusion_matrix.csv")[0] == {"truth": "bear", "bear": "4", "guitar": "1", "mushroom": "0"}


class SegCodeNet(nn.Module):
    """Per-pixel logits: the class is channel 0 divided by 50."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return F.one_hot((x[:, 0].long() // 50).clamp(0, self.n - 1), self.n).permute(0, 3, 1, 2).float() * 10 + self.bias


def test_segmentation_planted_wrong_mask_has_the_lowest_iou(tmp_path):
    rng = np.random.default_rng(2)
    ids = torch.tensor(rng.integers(0, 3, (6, 8, 12)))
    x = torch.zeros(6, 3, 8, 12, dtype=torch.uint8)
    x[:, 0] = (ids * 50).to(torch.uint8)
    mask = ids.clone()
    mask[:, :, :2] = 3  # void strip
    mask[4] = torch.where(mask[4] == 3, 3, (mask[4] + 1) % 3)  # the planted error: every counted pixel of image 4 wrong
    task = SegmentationTask(SegCodeNet(4), num_classes=4, void_index=3, class_names=["road", "sky", "car", "void"])
    rep = collect(task, batches_of({"image": x, "mask": mask, "name": [f"f{i}" for i in range(6)]}, 4), k=3)
    worst = rep.tables["lowest_iou"]
    assert worst[0]["name"] == "f4" and worst[0]["iou"] == 0 and worst[0]["pixel_acc"] == 0 and worst[1]["iou"] == 1
    counted = ids[:, :, 2:]
    expected = st.confusion_matrix(torch.cat([counted[:4], counted[5:]]), torch.cat([counted[:4], counted[5:]]), 3) + st.confusion_matrix(counted[4], (counted[4] + 1) % 3, 3)
    assert [[int(v) for k, v in r.items() if k != "truth"] for r in rep.tables["confusion_matrix"]] == expected.tolist()
    assert [r["class"] for r in rep.tables["classes"]] == ["road", "sky", "car"] and rep.summary["pixel_acc"] == pytest.approx(5 / 6, abs=1e-4)
    out = Path(write_report(rep, tmp_path / "out")).parent
    assert (out / "lowest_iou.png").stat().st_size > 1000 and "confusion_matrix" in (out / "README.md").read_text()
    assert "| road |" in (out / "README.md").read_text() and "| truth | road | sky | car |" not in (out / "README.md").read_text()  # csv only


class PointCodeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x[:, 0, 0, :2].float() / 255 * 2 - 1 + self.bias


def test_points_planted_far_target_has_the_largest_error(tmp_path):
    code = torch.tensor(np.random.default_rng(3).integers(0, 256, (8, 2)), dtype=torch.uint8)
    x = torch.zeros(8, 3, 12, 16, dtype=torch.uint8)
    x[:, 0, 0, :2] = code
    target = code.float() / 255 * 2 - 1
    target[2] = torch.tensor([-1.0, -1.0])  # the planted error: the point moved to a corner
    size = torch.tensor([[480, 640]] * 8)
    task = PointRegressionTask(PointCodeNet(), zero_head=False)
    rep = collect(task, batches_of({"image": x, "target": target, "orig_size": size, "name": [f"p{i}" for i in range(8)]}), k=2)
    far = float((to_pixels(code[2].float() / 255 * 2 - 1, size[2]) - to_pixels(torch.tensor([-1.0, -1.0]), size[2])).norm())
    worst = rep.tables["largest_errors"]
    assert worst[0]["name"] == "p2" and worst[0]["error_px"] == pytest.approx(far, abs=0.01) and worst[1]["error_px"] == pytest.approx(0, abs=0.01)
    assert (worst[0]["true_x"], worst[0]["true_y"]) == (-0.5, -0.5)
    pct = {r["statistic"]: r["error_px"] for r in rep.tables["percentiles"]}
    assert pct["p100"] == pytest.approx(far, abs=0.01) and pct["p50"] == pytest.approx(0, abs=0.01) and pct["mean"] == pytest.approx(far / 8, abs=0.01)
    out = Path(write_report(rep, tmp_path / "out")).parent
    assert (out / "error_histogram.png").is_file() and (out / "largest_errors.png").is_file() and (out / "histogram.csv").is_file()


class TextCodeNet(nn.Module):
    """Sentiment read from the second token: 1 positive, else negative."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, ids, mask=None, frozen_encoder=False):
        pos = (ids[:, 1] == 1).float()
        return torch.stack([1 - pos, pos], 1) * 3 + self.bias


def test_text_most_wrong_and_errors_by_length(tmp_path):
    n = 8
    lengths = torch.arange(1, n + 1) * 3
    ids = torch.zeros(n, 24, dtype=torch.long)
    mask = (torch.arange(24)[None] < lengths[:, None]).long()
    sentiment = torch.tensor([0, 1] * 4)
    ids[:, 1] = sentiment
    label = sentiment.clone()
    label[6:] = 1 - label[6:]  # the two longest reviews mislabelled
    task = TextClassificationTask(TextCodeNet(), num_classes=2, class_names=["negative", "positive"])
    data = {"input_ids": ids, "attention_mask": mask, "label": label, "name": [f"r{i}" for i in range(n)], "excerpt": [f"text {i}" for i in range(n)]}
    rep = collect(task, batches_of(data), k=5)
    wrong = rep.tables["most_wrong"]
    assert [w["review"] for w in wrong] == ["r6", "r7"] and wrong[0]["probability"] == pytest.approx(1 / (1 + math.exp(-3)), abs=1e-4)
    by = rep.tables["errors_by_length"]
    assert [r["errors"] for r in by] == [0, 0, 0, 2] and by[-1]["length"] == "21-24" and "top_losses" not in rep.tables
    out = Path(write_report(rep, tmp_path / "out")).parent
    assert (out / "most_wrong.png").is_file() and (out / "errors_by_length.png").is_file() and read_csv(out / "most_wrong.csv")[1]["review"] == "r7"
    with pytest.raises(InterpretError, match="no labels"):
        collect(task, [{k: v for k, v in data.items() if k != "label"}])


def test_nothing_to_interpret():
    with pytest.raises(InterpretError, match="nothing to interpret"):
        collect(nn.Linear(2, 2), [])
    task = PointRegressionTask(PointCodeNet(), zero_head=False)
    with pytest.raises(InterpretError, match="no batches"):
        collect(task, [])

