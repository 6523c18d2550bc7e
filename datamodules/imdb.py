"""IMDB movie reviews: the fastai ``texts.csv`` layout and the full ``aclImdb`` folders.

Reviews are cleaned (HTML line breaks), tokenized once with the backbone's fast tokenizer
(token ids cached in memory and under ``$LESSON3_CACHE/imdb-tokens``), truncated to
``max_length``, batched with reviews of similar length (:class:`BucketBatchSampler`) and
padded per batch.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from .base import BaseDataModule, DataError, cache_dir, split_indices
from .checks import decode_text as _decode
from .checks import duplicates
from .imdb_sample import write_imdb_sample
from .loaders import EpochRandomSampler, ResumableLoader, epoch_generator

CLASSES = ["negative", "positive"]
EXCERPT = 300
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_TOKEN_CACHE: dict[str, list[np.ndarray]] = {}


def clean_text(text: str) -> str:
    """HTML line breaks and entities to plain text, runs of whitespace to one space."""
    return _SPACE.sub(" ", html.unescape(_BR.sub("\n", text))).strip()


# -- reading ------------------------------------------------------------------
class Reviews:
    """Texts with labels (class ids, -1 where unknown) and names (file or CSV row)."""

    def __init__(self, texts: list[str] | None = None, labels: list[int] | None = None, names: list[str] | None = None):
        self.texts, self.labels, self.names = texts or [], labels or [], names or []

    def __len__(self):
        return len(self.texts)

    def subset(self, idx: list[int]) -> Reviews:
        return Reviews([self.texts[i] for i in idx], [self.labels[i] for i in idx], [self.names[i] for i in idx])

    def __add__(self, other: Reviews) -> Reviews:
        return Reviews(self.texts + other.texts, self.labels + other.labels, self.names + other.names)

    def unlabelled(self) -> Reviews:
        return Reviews(self.texts, [-1] * len(self), self.names)


def _parse_bool(value: str, path: Path, row: int) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise DataError(f"{path} row {row}: is_valid '{value}' is not True/False.")


def read_csv(path: Path, labelled: bool = True) -> tuple[Reviews, list[bool] | None]:
    """Reviews of a fastai ``texts.csv`` (``label``, ``text``, optional ``is_valid``) and its split flags.

    Rows are numbered from 1 after the header. With ``labelled=False`` only ``text`` is needed.
    """
    raw = path.read_bytes()
    _decode(raw, path)  # clear error for non-UTF-8 bytes
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: unreadable CSV ({e}).") from e
    df.columns = [str(c).strip() for c in df.columns]
    need = ["label", "text"] if labelled else ["text"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)} (expected label, text, is_valid).")
    texts, labels, names = [], [], []
    for i, text in enumerate(df["text"].tolist(), start=1):
        text = clean_text(text)
        if not text:
            raise DataError(f"{path} row {i}: empty text.")
        texts.append(text)
        names.append(f"row {i}")
        if labelled:
            label = df["label"].iat[i - 1].strip()
            if label not in CLASSES:
                raise DataError(f"{path} row {i}: label '{df['label'].iat[i - 1]}' is not one of {CLASSES}.")
            labels.append(CLASSES.index(label))
        elif "label" in df.columns and df["label"].iat[i - 1].strip() in CLASSES:
            labels.append(CLASSES.index(df["label"].iat[i - 1].strip()))
        else:
            labels.append(-1)
    if not texts:
        raise DataError(f"{path}: no rows.")
    valid = [_parse_bool(v, path, i) for i, v in enumerate(df["is_valid"].tolist(), start=1)] if "is_valid" in df.columns else None
    return Reviews(texts, labels, names), valid


def read_txt(path: Path) -> str:
    text = clean_text(_decode(path.read_bytes(), path))
    if not text:
        raise DataError(f"{path}: empty review.")
    return text


def read_folder(folder: Path, label: int = -1, base: Path | None = None) -> Reviews:
    """Every ``*.txt`` under ``folder`` (sorted), named by its path relative to ``base``."""
    base = base or folder
    files = sorted(folder.rglob("*.txt"))
    return Reviews([read_txt(f) for f in files], [label] * len(files), [str(f.relative_to(base)) for f in files])


# -- tokens -------------------------------------------------------------------
def tokenize(tokenizer, texts: list[str], cap: int) -> list[np.ndarray]:
    """Token ids without special tokens, at most ``cap`` each; cached in memory and on disk."""
    h = hashlib.sha1(tokenizer.backend_tokenizer.to_str().encode())
    h.update(f"\0{cap}\0{len(texts)}".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    key = h.hexdigest()
    if key in _TOKEN_CACHE:
        return _TOKEN_CACHE[key]
    path = cache_dir() / "imdb-tokens" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            flat, offsets = z["ids"], z["offsets"]
    else:
        if len(texts) > 2000:
            rank_zero_info(f"Tokenizing {len(texts)} reviews (cached in {path.parent}) ...")
        ids: list[list[int]] = []
        for s in range(0, len(texts), 1000):
            enc = tokenizer(texts[s : s + 1000], add_special_tokens=False, truncation=True, max_length=cap, return_attention_mask=False, return_token_type_ids=False)
            ids += enc["input_ids"]
        offsets = np.cumsum([0] + [len(x) for x in ids]).astype(np.int64)
        flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.npz")
        np.savez(tmp, ids=flat, offsets=offsets)
        os.replace(tmp, path)
    out = [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    _TOKEN_CACHE[key] = out
    return out


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a text (``[CLS]``, ``[SEP]`` for BERT)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return list(full[:k]), list(full[k + len(plain) :])
    raise DataError(f"Tokenizer {tokenizer.name_or_path}: cannot tell where it puts its special tokens.")


class ReviewDataset(Dataset):
    """Tokenized reviews: dicts of ``input_ids`` (with special tokens), ``label``, ``name``, ``excerpt``.

    Args:
        reviews: the texts, labels and names.
        ids: their cached token ids (no special tokens).
        tokenizer: tells which special tokens frame a review.
        max_length: truncation length including the special tokens.
    """

    def __init__(self, reviews: Reviews, ids: list[np.ndarray], tokenizer, max_length: int):
        self.reviews, self.ids = reviews, ids
        self.prefix, self.suffix = special_frame(tokenizer)
        self.n_special = len(self.prefix) + len(self.suffix)
        self.max_length = max_length

    def __len__(self):
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        body = self.max_length - self.n_special
        return [min(len(x), body) + self.n_special for x in self.ids]

    def __getitem__(self, i):
        body = self.ids[i][: self.max_length - self.n_special].tolist()
        return {
            "input_ids": torch.tensor(self.prefix + body + self.suffix, dtype=torch.long),
            "label": self.reviews.labels[i],
            "name": self.reviews.names[i],
            "excerpt": self.reviews.texts[i][:EXCERPT],
            "index": i,
        }


class PadCollate:
    """Pads a list of items to the batch's longest review; ``label`` only when every item has one."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        n, longest = len(items), max(len(it["input_ids"]) for it in items)
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        for k, it in enumerate(items):
            ids[k, : len(it["input_ids"])] = it["input_ids"]
            mask[k, : len(it["input_ids"])] = 1
        out = {"input_ids": ids, "attention_mask": mask, "name": [it["name"] for it in items], "excerpt": [it["excerpt"] for it in items], "index": torch.tensor([it["index"] for it in items])}
        labels = [it["label"] for it in items]
        if all(label >= 0 for label in labels):
            out["label"] = torch.tensor(labels, dtype=torch.long)
        return out


class BucketBatchSampler(BatchSampler):
    """Batches of reviews of similar length (fastai's ``SortishSampler``), with PyTorch's ``BatchSampler`` API.

    The indices come from ``sampler`` (random for training; Lightning swaps in a
    ``DistributedSampler`` under DDP). Shuffled: they are cut into chunks of
    ``batch_size * chunk``, each chunk is sorted by length (longest first) and cut into
    batches, and the batches are shuffled with the longest one first (memory problems show at
    once). Not shuffled: all indices longest first.

    Args:
        sampler: where the indices come from.
        lengths: token count of every item of the dataset.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool = False, lengths: list[int] | None = None, shuffle: bool = False, chunk: int = 50):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths, self.shuffle, self.chunk = list(lengths or []), shuffle, chunk
        self.skip = 0  # batches of the next iteration to leave out (a resumed epoch: ResumableLoader)

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        idx, bs = list(self.sampler), self.batch_size
        key = lambda i: -self.lengths[i]  # noqa: E731
        size = bs * self.chunk if self.shuffle else max(1, len(idx))
        order = [i for c in range(0, len(idx), size) for i in sorted(idx[c : c + size], key=key)]
        batches = [order[s : s + bs] for s in range(0, len(order), bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        if self.shuffle and len(batches) > 1:
            longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            rest = [b for k, b in enumerate(batches) if k != longest]
            # shuffled by the sampler's (seed, epoch) where it has them: reproducible and resumable
            perm = torch.randperm(len(rest), generator=epoch_generator(self.sampler)).tolist()
            batches = [batches[longest]] + [rest[k] for k in perm]
        skip, self.skip = self.skip, 0
        return iter(batches[skip:])


# -- the datamodule ---------------------------------------------------------
class IMDBDataModule(BaseDataModule):
    """IMDB reviews for sentiment classification or (``lm=True``) masked-LM fine-tuning.

    Layouts (detected from the folder):

    * fastai ``IMDB_SAMPLE``: ``texts.csv`` with ``label`` (``negative``/``positive``),
      ``text`` and ``is_valid`` (without ``is_valid``: a seeded ``valid_pct`` split);
      ``test`` uses the validation rows.
    * ``aclImdb``: ``train/{pos,neg}/*.txt``, ``test/{pos,neg}/*.txt``, ``train/unsup/*.txt``
      (the folder itself or its parent); validation is a seeded ``valid_pct`` split of
      ``train``, ``test`` feeds the ``test`` subcommand.

    With ``lm=True`` every text available is used without labels (fastai's language-model
    data: train, valid, test and unsup), split randomly by ``valid_pct`` for the perplexity.

    Args:
        backbone: Hugging Face name or folder whose tokenizer is used. ``None`` (default) takes
            the tokenizer of the model being trained (``net.tokenizer``), or the packaged
            all-MiniLM-L6-v2 when no model is attached. When set, it must tokenize like the
            model's backbone (checked).
        max_length: truncation length in tokens, special tokens included (progressive
            resizing may change it with :meth:`set_size`, up to ``max(max_length, 512)``).
        lm: language-model data (all texts, no labels).
        valid_pct: validation share where the layout gives no split (and in ``lm`` mode).
        predict_path: a CSV with a ``text`` column, a folder of ``.txt`` reviews (searched
            recursively) or one ``.txt`` file; default: the validation split.
        include_unsup: ``lm`` mode: use aclImdb's ``train/unsup`` texts too.
        feedback: ``serve.py``'s feedback store: reviews with corrected labels join the training split.
    """

    sample_name = "imdb"
    feedback_task = "text"

    def __init__(
        self,
        root: str | None = None,
        backbone: str | None = None,
        max_length: int = 512,
        lm: bool = False,
        batch_size: int = 16,
        num_workers: int | None = 0,
        valid_pct: float = 0.2,
        seed: int = 42,
        predict_path: str | None = None,
        include_unsup: bool = True,
        feedback: str | None = None,
    ):
        super().__init__(root, batch_size, num_workers, seed, feedback)
        if max_length < 8:
            raise DataError(f"--data.max_length {max_length}: too short (at least 8 tokens).")
        self.backbone, self.size, self.lm = backbone, int(max_length), lm
        self.cap = max(self.size, 512)
        self.valid_pct, self.predict_path, self.include_unsup = valid_pct, predict_path, include_unsup
        self._tokenizer = None

    @property
    def classes(self) -> list[str]:
        return list(CLASSES)

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    def write_sample(self, folder: Path) -> None:
        write_imdb_sample(folder)

    # -- tokenizer -----------------------------------------------------------
    def _model_tokenizer(self):
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        return getattr(getattr(module, "net", None), "tokenizer", None)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from models.text import load_tokenizer, tokenizer_signature

            theirs = self._model_tokenizer()
            if self.backbone is None:
                self._tokenizer = theirs if theirs is not None else load_tokenizer(None)
            else:
                mine = load_tokenizer(self.backbone)
                if theirs is not None and tokenizer_signature(mine) != tokenizer_signature(theirs):
                    raise DataError(
                        f"--data.init_args.backbone '{self.backbone}' tokenizes differently from the model's backbone "
                        f"({len(mine)} vs {len(theirs)} tokens): set both to the same backbone, or leave the data's unset."
                    )
                self._tokenizer = mine
        return self._tokenizer

    # -- layout --------------------------------------------------------------
    @property
    def layout(self) -> tuple[str, Path]:
        root = self.root_path
        if (root / "texts.csv").is_file():
            return "fastai", root
        for cand in (root, root / "aclImdb"):
            if (cand / "train" / "pos").is_dir() or (cand / "test" / "pos").is_dir():
                return "aclimdb", cand
        raise DataError(
            f"{root}: not an IMDB folder. Expected the fastai layout (texts.csv with label, text, is_valid) "
            "or aclImdb (train/pos, train/neg, test/pos, test/neg, train/unsup with one review a .txt file)."
        )

    def _acl(self, folder: Path, split: str) -> Reviews:
        out = Reviews()
        for c, sub in ((0, "neg"), (1, "pos")):
            d = folder / split / sub
            if d.is_dir():
                out = out + read_folder(d, c, folder)
        return out

    def _splits(self, stage: str | None) -> dict[str, Reviews]:
        """The labelled (or, in ``lm`` mode, unlabelled) splits the stage needs."""
        kind, root = self.layout
        fit = stage in (None, "fit", "validate")
        if kind == "fastai":
            reviews, valid = read_csv(root / "texts.csv", labelled=not self.lm)
            if self.lm:
                return self._lm_split(reviews)
            if valid is None:
                tr, va = split_indices(len(reviews), self.valid_pct, self.seed)
            else:
                tr = [i for i, v in enumerate(valid) if not v]
                va = [i for i, v in enumerate(valid) if v]
            return {"train": reviews.subset(tr), "valid": reviews.subset(va), "test": reviews.subset(va)}
        out: dict[str, Reviews] = {}
        if self.lm:
            texts = self._acl(root, "train") + self._acl(root, "test")
            if self.include_unsup and (root / "train" / "unsup").is_dir():
                texts = texts + read_folder(root / "train" / "unsup", -1, root)
            return self._lm_split(texts)
        if fit or stage == "predict":
            train = self._acl(root, "train")
            tr, va = split_indices(len(train), self.valid_pct, self.seed)
            out["train"], out["valid"] = train.subset(tr), train.subset(va)
        if stage in (None, "test"):
            out["test"] = self._acl(root, "test")
        return out

    def _lm_split(self, reviews: Reviews) -> dict[str, Reviews]:
        tr, va = split_indices(len(reviews), self.valid_pct, self.seed)
        reviews = reviews.unlabelled()
        return {"train": reviews.subset(tr), "valid": reviews.subset(va), "test": reviews.subset(va)}

    def _predict_reviews(self) -> Reviews:
        path = Path(self.predict_path).expanduser()
        if path.is_dir():
            reviews = read_folder(path)
            if not len(reviews):
                raise DataError(f"{path}: no .txt reviews in --data.predict_path.")
            return reviews.unlabelled()
        if path.is_file() and path.suffix.lower() == ".csv":
            return read_csv(path, labelled=False)[0].unlabelled()
        if path.is_file() and path.suffix.lower() == ".txt":
            return Reviews([read_txt(path)], [-1], [path.name])
        raise DataError(f"{path}: --data.predict_path must be a .csv with a 'text' column, a .txt file or a folder of .txt files.")

    def _feedback_reviews(self) -> Reviews:
        """serve.py's corrections as labelled reviews (unlabelled in ``lm`` mode)."""
        examples = self.feedback_examples(self.classes)
        bad = [ex.id for ex in examples if ex.correction.get("label") not in CLASSES]
        if bad:
            raise DataError(f"--data.feedback {self.feedback}: rows {bad} have no label among {CLASSES}.")
        labels = [-1 if self.lm else CLASSES.index(ex.correction["label"]) for ex in examples]
        return Reviews([read_txt(ex.input) for ex in examples], labels, [f"feedback row {ex.id}" for ex in examples])

    def _without_duplicates(self, train: Reviews, valid: Reviews) -> Reviews:
        """The training reviews less those also in validation (a leak) or repeated, with a printed line."""
        keep, leaked, repeated = duplicates(train.texts, valid.texts)
        if leaked or repeated:
            rank_zero_info(
                f"{self.layout[1]}: left {leaked + repeated} duplicate review(s) out of training: {leaked} also in the "
                f"validation split (they would leak it into training), {repeated} repeated within training."
            )
        return train.subset(keep) if len(keep) < len(train) else train

    # -- datasets and loaders ------------------------------------------------
    def dataset(self, reviews: Reviews) -> ReviewDataset:
        return ReviewDataset(reviews, tokenize(self.tokenizer, reviews.texts, self.cap), self.tokenizer, self.size)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_path:
            self.datasets["predict"] = self.dataset(self._predict_reviews())
            return
        splits = self._splits(stage)
        if "train" in splits and "valid" in splits:
            splits["train"] = self._without_duplicates(splits["train"], splits["valid"])
        if "train" in splits and stage in (None, "fit") and self.feedback:
            splits["train"] = splits["train"] + self._feedback_reviews()
        needed = {"fit": ["train", "valid"], "validate": ["valid"], "test": ["test"], "predict": ["valid"]}.get(stage, [])
        for s in needed:
            if not len(splits.get(s, Reviews())):
                raise DataError(f"{self.root_path}: the '{s}' split is empty; check the folder layout, is_valid and --data.valid_pct.")
        for s, reviews in splits.items():
            if len(reviews):
                self.datasets[s] = self.dataset(reviews)
        if stage == "predict":
            self.datasets["predict"] = self.datasets["valid"]

    def set_size(self, size) -> None:
        """Change the truncation length (tokens); loaders built afterwards use it."""
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        if not 8 <= size <= self.cap:
            raise DataError(f"max_length {size}: must be between 8 and {self.cap} (the length reviews were tokenized to).")
        self.size = size
        for ds in self.datasets.values():
            ds.max_length = size

    def _loader(self, stage: str, shuffle: bool = False) -> DataLoader:
        ds = self.require(stage)
        batches = BucketBatchSampler(
            EpochRandomSampler(ds, self.run_seed()) if shuffle else SequentialSampler(ds), self.batch_size,
            drop_last=shuffle and len(ds) > self.batch_size, lengths=ds.lengths, shuffle=shuffle,
        )
        # training: order from (seed, epoch) only, position saved in checkpoints (see datamodules/loaders.py)
        return (ResumableLoader if shuffle else DataLoader)(
            ds,
            batch_sampler=batches,
            collate_fn=PadCollate(self.tokenizer.pad_token_id or 0),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.run_seed()),
            **({"resume": self._resume, "progress": self.batches_done} if shuffle else {}),
        )
