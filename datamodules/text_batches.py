"""Text batches: token ids cached once, items framed by the tokenizer's special tokens,
batches of similar length (:class:`BucketBatchSampler`) padded per batch (:class:`PadCollate`).
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from .base import DataError, cache_dir
from .loaders import EpochRandomSampler, ResumableLoader, epoch_generator
from .text_files import Texts

EXCERPT = 300  # characters of each text carried in a batch (tables of predictions)
_TOKEN_CACHE: dict[str, list[np.ndarray]] = {}


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
            rank_zero_info(f"Tokenizing {len(texts)} texts (cached in {path.parent}) ...")
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


def data_tokenizer(backbone: str | None):
    """The datamodule's tokenizer: ``backbone``'s (``None``: the packaged default), loaded once per name."""
    from models.text import load_tokenizer

    return load_tokenizer(backbone)


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a text (``[CLS]``, ``[SEP]`` for BERT)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return list(full[:k]), list(full[k + len(plain) :])
    raise DataError(f"Tokenizer {tokenizer.name_or_path}: cannot tell where it puts its special tokens.")


class TextDataset(Dataset):
    """Tokenized texts: dicts of ``input_ids`` (with special tokens), ``label``, ``name``, ``excerpt``.

    Args:
        reviews: the texts, labels (class ids, -1: none) and names (``.reviews``, IMDB's name).
        ids: their cached token ids (no special tokens).
        tokenizer: tells which special tokens frame a text.
        max_length: truncation length including the special tokens.
    """

    def __init__(self, reviews: Texts, ids: list[np.ndarray], tokenizer, max_length: int):
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
    """Pads a list of items to the batch's longest text; ``label`` only when every item has one."""

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
    """Batches of texts of similar length (fastai's ``SortishSampler``), with PyTorch's ``BatchSampler`` API.

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




def bucket_loader(ds: TextDataset, batch_size: int, shuffle: bool, seed: int, num_workers: int, pad_id: int, **resume) -> DataLoader:
    """A loader of padded batches of similar length. Training (``shuffle``): a
    :class:`~datamodules.loaders.ResumableLoader` (``resume``: its ``resume``, ``progress`` and ``position``)
    over an epoch-seeded order; otherwise all texts longest first."""
    batches = BucketBatchSampler(
        EpochRandomSampler(ds, seed) if shuffle else SequentialSampler(ds), batch_size,
        drop_last=shuffle and len(ds) > batch_size, lengths=ds.lengths, shuffle=shuffle,
    )
    return (ResumableLoader if shuffle else DataLoader)(
        ds,
        batch_sampler=batches,
        collate_fn=PadCollate(pad_id),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
        **resume,
    )
