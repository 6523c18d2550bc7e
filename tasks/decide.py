"""Planet's third decision rule: each image's tag set chosen to maximise its expected F-beta.

Thresholds (a fixed 0.2, or one tuned per tag) decide every tag on its own. Kaggle scores each
image's F2 over its whole set, so whether a doubtful tag is worth adding depends on the image's
other tags (a false tag costs an image whose one true tag is found 3.5 times what it costs one
whose four are). :func:`expected_f2_decision` takes the tag probabilities of an image as
independent Bernoulli chances and picks the set ``S`` with the highest expected score (as the
7th-place Planet solution did).

The expectation is exact, over all ``2^C`` outcomes of all the tags, by dynamic programming: with
``A`` the true tags inside ``S`` and ``B`` those outside, ``F = (1 + b²) A / (b² (A + B) + |S|)``
(``zero_division`` where ``A + B = |S| = 0``); ``A`` and ``B`` are independent Poisson-binomial
counts, whose distributions take ``C`` steps to build (:func:`count_distribution`).

The search enumerates the uncertain tags: tags with ``p >= high`` are always in the set, tags with
``p <= low`` never, and every subset of the ``m`` others (``2^m`` candidates, ``m`` capped at
``max_uncertain``) is scored; beyond the cap the most confident band tags are fixed too.
"""

from __future__ import annotations

import torch

__all__ = ["count_distribution", "expected_fbeta", "candidate_sets", "expected_f2_decision"]


def count_distribution(probs: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Distribution of the number of true tags among the members, for each row of ``member``.

    Args:
        probs: ``(C,)`` independent chances of each tag being true.
        member: ``(K, C)`` bool, which tags are counted in each of ``K`` rows.

    Returns:
        ``(K, C + 1)`` float64: entry ``[k, n]`` is the chance that exactly ``n`` members of row ``k`` are true.
    """
    k, c = member.shape
    dist = torch.zeros(k, c + 1, dtype=torch.float64)
    dist[:, 0] = 1.0
    for j in range(c):
        p = float(probs[j])
        moved = dist * (1 - p)
        moved[:, 1:] += dist[:, :-1] * p
        dist = torch.where(member[:, j : j + 1], moved, dist)
    return dist


def expected_fbeta(probs: torch.Tensor, chosen: torch.Tensor, beta: float = 2.0, zero_division: float = 1.0) -> torch.Tensor:
    """Exact expected F-beta of predicting each row of ``chosen`` for an image with tag chances ``probs``.

    Args:
        probs: ``(C,)`` tag probabilities, taken as independent.
        chosen: ``(K, C)`` bool candidate tag sets (or ``(C,)`` for one).
        zero_division: the score when no tag is true and none is predicted (as in :mod:`tasks.fbeta`).

    Returns:
        ``(K,)`` float64 (a 0-d tensor for one set).
    """
    probs = probs.detach().double().cpu()
    single = chosen.ndim == 1
    chosen = chosen.reshape(-1, probs.numel()).bool().cpu()
    a = count_distribution(probs, chosen)  # true tags inside the set
    b = count_distribution(probs, ~chosen)  # true tags outside it
    c = probs.numel()
    n = torch.arange(c + 1, dtype=torch.float64)
    size = chosen.sum(1).double()[:, None, None]
    b2 = beta * beta
    den = b2 * (n[:, None] + n[None, :])[None] + size  # (K, A, B)
    score = torch.where(den > 0, (1 + b2) * n[None, :, None] / den.clamp_min(1e-12), torch.full_like(den, float(zero_division)))
    out = (a[:, :, None] * b[:, None, :] * score).sum((1, 2))
    return out[0] if single else out


def candidate_sets(probs: torch.Tensor, low: float = 0.01, high: float = 0.99, max_uncertain: int = 12) -> torch.Tensor:
    """The tag sets the search scores: ``(2^m, C)`` bool, confident tags fixed, every subset of the
    ``m`` uncertain ones (``low < p < high``; beyond ``max_uncertain``, the band tag nearest its end,
    ``max(p, 1 - p)``, is fixed in or out, one at a time)."""
    probs = probs.detach().double().cpu()
    fixed = probs >= high
    band = [j for j in range(probs.numel()) if low < float(probs[j]) < high]
    band.sort(key=lambda j: float(probs[j]))
    while len(band) > max(0, max_uncertain):
        lo, hi = float(probs[band[0]]), float(probs[band[-1]])
        if hi >= 1 - lo:
            fixed[band.pop()] = True  # the most likely band tag goes in
        else:
            band.pop(0)  # the least likely stays out
    sets = fixed.repeat(2 ** len(band), 1)
    if band:  # row r holds band tag k where bit k of r is set (row 0: none of them)
        rows = torch.arange(2 ** len(band))[:, None]
        sets[:, band] = (rows >> torch.arange(len(band))) & 1 == 1
    return sets


def expected_f2_decision(
    probs: torch.Tensor,
    beta: float = 2.0,
    low: float = 0.01,
    high: float = 0.99,
    max_uncertain: int = 12,
    zero_division: float = 1.0,
) -> torch.Tensor:
    """Each image's tag set with the highest expected F-beta (see the module docstring).

    Args:
        probs: ``(N, C)`` (or ``(C,)``) tag probabilities.
        beta: F-beta's beta (Kaggle's Planet: 2).
        low, high: tags at or below ``low`` are left out, at or above ``high`` put in, without search.
        max_uncertain: most tags enumerated per image (``2^max_uncertain`` candidate sets).
        zero_division: the score of an empty prediction for an image with no true tag.

    Returns:
        bool tensor of ``probs``' shape: the chosen tags (ties: the first in :func:`candidate_sets`' order).
    """
    if not 0 <= low < high <= 1:
        raise ValueError(f"expected_f2_decision: need 0 <= low < high <= 1, got low={low}, high={high}.")
    single = probs.ndim == 1
    rows = probs.detach().double().cpu().reshape(-1, probs.shape[-1])
    out = torch.zeros(rows.shape, dtype=torch.bool)
    for i, p in enumerate(rows):
        sets = candidate_sets(p, low, high, max_uncertain)
        out[i] = sets[int(expected_fbeta(p, sets, beta, zero_division).argmax())]
    return out[0] if single else out
