"""Hugging Face helpers: quiet loading, and the attention-probability dropout of an encoder set after loading.

Why the dropout is an option: in training, PyTorch's fused attention kernels on the CPU have no dropout, so
a nonzero attention dropout makes ``scaled_dot_product_attention`` fall back to the plain maths
path, which keeps every (heads x length x length) probability matrix for the backward pass.
Measured for all-MiniLM-L6-v2 at batch 16 x 512 tokens on 2 CPU cores (``benchmarks/text_memory.py``:
one forward + backward of the masked LM): attention dropout 0.1 (the checkpoint's own) 6.8 GB peak
RSS and 10.2 s, 0.0 3.0 GB and 4.3 s. On CUDA the fused kernels support dropout (not measured here).
"""

from __future__ import annotations

import contextlib

from torch import nn

CONFIG_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")  # BERT/RoBERTa, DistilBERT, GPT-2


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and progress bars (fresh heads are expected here)."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def set_attention_dropout(model: nn.Module, p: float | None, backbone: str | None) -> None:
    """Set the dropout on attention probabilities of every attention module (``None``: leave the
    backbone's own). Raises ``ValueError`` naming the backbone where no attention dropout is found."""
    if p is None:
        return
    if not 0.0 <= p < 1.0:
        raise ValueError(f"attention_dropout {p}: expected a probability in [0, 1).")
    found = 0
    for module in model.modules():
        drop = getattr(module, "dropout", None)
        if type(module).__name__.endswith("Attention") and isinstance(drop, nn.Dropout):
            drop.p = float(p)
            found += 1
    if not found:
        raise ValueError(f"Backbone '{backbone}': no attention dropout found to set (attention_dropout {p}); leave it null for this backbone.")
    config = getattr(model, "config", None)
    for key in CONFIG_KEYS:
        if config is not None and hasattr(config, key):
            setattr(config, key, float(p))  # saved with the encoder (save_pretrained), as trained
