"""BERT's masking of token ids for masked-language-model training."""

from __future__ import annotations

import torch


def mask_tokens(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor, mask_id: int, vocab_size: int,
    p: float = 0.15, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``p`` of the real tokens become targets; of those 80% ``[MASK]``, 10% random, 10% kept.

    Returns (masked ids, labels with -100 where nothing is predicted); at least one target per batch.
    """
    dev = input_ids.device
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(dev))
    r = torch.rand(input_ids.shape, generator=generator, device=dev)
    chosen = (r < p) & candidates
    if not chosen.any() and candidates.any():
        flat = torch.where(candidates, r, torch.full_like(r, 2.0)).argmin()
        chosen.view(-1)[flat] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    how = torch.rand(input_ids.shape, generator=generator, device=dev)
    masked = input_ids.clone()
    masked[chosen & (how < 0.8)] = mask_id
    rand = chosen & (how >= 0.8) & (how < 0.9)
    masked[rand] = torch.randint(vocab_size, input_ids.shape, generator=generator, device=dev)[rand]
    return masked, labels
