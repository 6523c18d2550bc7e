"""How text batches and results are shown: token ids as text, blocks of text as a figure."""

from __future__ import annotations

import textwrap

import torch

from .pictures import pyplot


def text_figure(blocks: list[tuple[str, str]], title: str = "", width: int = 110, max_lines: int = 6):
    """A matplotlib figure listing (heading, text) blocks, the text wrapped to ``width`` characters."""
    plt = pyplot()
    lines: list[tuple[str, bool]] = []
    for head, body in blocks:
        lines.append((head, True))
        wrapped = textwrap.wrap(body, width) or [""]
        if len(wrapped) > max_lines:
            wrapped = wrapped[:max_lines]
            wrapped[-1] += " ..."
        lines += [(w, False) for w in wrapped] + [("", False)]
    if not blocks:
        lines = [("(nothing to show)", False)]
    n = len(lines) + (2 if title else 0)
    fig = plt.figure(figsize=(width * 0.085, 0.22 * n + 0.3))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    y, step = 1 - 0.1 / n, 1 / n
    if title:
        ax.text(0.01, y, title, fontsize=11, fontweight="bold", va="top", family="monospace")
        y -= 2 * step
    for text, bold in lines:
        ax.text(0.01, y, text, fontsize=9, va="top", family="monospace", fontweight="bold" if bold else "normal")
        y -= step
    return fig


def decode(tokenizer, ids: torch.Tensor, attention_mask: torch.Tensor | None = None, marks: dict[int, str] | None = None) -> str:
    """Token ids as text (special tokens shown), ``marks`` replacing the tokens at given positions."""
    ids = ids[attention_mask.bool()] if attention_mask is not None else ids
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    for pos, s in (marks or {}).items():
        tokens[pos] = s
    try:
        return tokenizer.convert_tokens_to_string(tokens)
    except Exception:  # noqa: BLE001 - display only
        return " ".join(tokens)
