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

Two searches, both exact under independence (the tests check them against every subset):

* ``subsets`` (the 7th-place solution's): tags with ``p >= high`` are always in the set, tags with
  ``p <= low`` never, and every subset of the ``m`` others is scored (``2^m`` candidates, ``m``
  capped at ``max_uncertain``; beyond the cap the most confident band tags are fixed too);
* ``ranked`` (default): only the ``C + 1`` sets "the ``k`` likeliest tags", ``k = 0..C``. Under
  independence an F-measure maximiser is always one of them (Lewis 1995; see Waegeman et al.,
  "On the Bayes-optimality of F-measure maximizers", JMLR 2014), so this is exact too, and it is
  vectorised over images (Kaggle's 40k validation images in seconds).
"""

from __future__ import annotations

import torch

__all__ = ["count_distribution", "expected_fbeta", "candidate_sets", "expected_f2_decision"]

SEARCHES = ("ranked", "subsets")
CHUNK = 4096  # images scored at once by the ranked search (memory: ~CHUNK * (C + 1)^2 doubles)


def count_distribution(probs: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Distribution of the number of true tags among the members, for each row of ``member``.

    Args:
        probs: ``(C,)`` independent chances of each tag being true, or ``(K, C)``, one row per set.
        member: ``(K, C)`` bool, which tags are counted in each of ``K`` rows.

    Returns:
        ``(K, C + 1)`` float64: entry ``[k, n]`` is the chance that exactly ``n`` members of row ``k`` are true.
    """
    k, c = member.shape
    probs = probs.double().expand(k, c)
    dist = torch.zeros(k, c + 1, dtype=torch.float64)
    dist[:, 0] = 1.0
    for j in range(c):
        p = probs[:, j : j + 1]
        moved = dist * (1 - p)
        moved[:, 1:] += dist[:, :-1] * p
        dist = torch.where(member[:, j : j + 1], moved, dist)
    return dist


def score_table(c: int, beta: float = 2.0, zero_division: float = 1.0) -> torch.Tensor:
    """``(C + 1, C + 1, C + 1)``: the F-beta of a set of ``s`` tags holding ``a`` true ones, with
    ``b`` true tags outside it, at ``[s, a, b]`` (impossible entries, ``a > s``, are never weighted)."""
    n = torch.arange(c + 1, dtype=torch.float64)
    b2 = beta * beta
    den = b2 * (n[None, :, None] + n[None, None, :]) + n[:, None, None]
    return torch.where(den > 0, (1 + b2) * n[None, :, None] / den.clamp_min(1e-12), torch.full_like(den, float(zero_division)))


def expected_fbeta(probs: torch.Tensor, chosen: torch.Tensor, beta: float = 2.0, zero_division: float = 1.0) -> torch.Tensor:
    """Exact expected F-beta of predicting each row of ``chosen`` for an image with tag chances ``probs``.

    Args:
        probs: ``(C,)`` tag probabilities, taken as independent (or ``(K, C)``, one image per set).
        chosen: ``(K, C)`` bool candidate tag sets (or ``(C,)`` for one).
        zero_division: the score when no tag is true and none is predicted (as in :mod:`tasks.fbeta`).

    Returns:
        ``(K,)`` float64 (a 0-d tensor for one set).
    """
    c = probs.shape[-1]
    probs = probs.detach().double().cpu()
    single = chosen.ndim == 1
    chosen = chosen.reshape(-1, c).bool().cpu()
    a = count_distribution(probs, chosen)  # true tags inside the set
    b = count_distribution(probs, ~chosen)  # true tags outside it
    table, size = score_table(c, beta, zero_division), chosen.sum(1)
    out = torch.empty(len(chosen), dtype=torch.float64)
    for s in size.unique().tolist():  # sum over (a, b) of P(a) P(b) F(s, a, b), by set size
        rows = size == s
        out[rows] = ((a[rows] @ table[s]) * b[rows]).sum(1)
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


def _ranked(rows: torch.Tensor, beta: float, zero_division: float) -> torch.Tensor:
    """The ranked search over ``(N, C)`` probabilities: for each image the best "k likeliest" set."""
    n, c = rows.shape
    order = rows.argsort(dim=1, descending=True, stable=True)
    ranked = rows.gather(1, order)
    top = torch.arange(c)[None, :] < torch.arange(c + 1)[:, None]  # (C + 1, C): row k = the k first
    chosen = top.repeat(n, 1)
    scores = expected_fbeta(ranked.repeat_interleave(c + 1, 0), chosen, beta, zero_division).reshape(n, c + 1)
    best = scores.argmax(1)  # first maximum: the smallest k among ties
    return torch.zeros(n, c, dtype=torch.bool).scatter(1, order, top[best])


def expected_f2_decision(
    probs: torch.Tensor,
    beta: float = 2.0,
    search: str = "ranked",
    low: float = 0.01,
    high: float = 0.99,
    max_uncertain: int = 12,
    zero_division: float = 1.0,
) -> torch.Tensor:
    """Each image's tag set with the highest expected F-beta (see the module docstring).

    Args:
        probs: ``(N, C)`` (or ``(C,)``) tag probabilities.
        beta: F-beta's beta (Kaggle's Planet: 2).
        search: ``ranked`` (the ``C + 1`` sets of likeliest tags) or ``subsets`` (enumeration of
            the uncertain tags; ``low``, ``high`` and ``max_uncertain`` apply to it only).
        low, high: tags at or below ``low`` are left out, at or above ``high`` put in, without search.
        max_uncertain: most tags enumerated per image (``2^max_uncertain`` candidate sets).
        zero_division: the score of an empty prediction for an image with no true tag.

    Returns:
        bool tensor of ``probs``' shape: the chosen tags (ties: the smaller set for ``ranked``, the
        first in :func:`candidate_sets`' order for ``subsets``).
    """
    if search not in SEARCHES:
        raise ValueError(f"expected_f2_decision: search '{search}': choose {' or '.join(SEARCHES)}.")
    if not 0 <= low < high <= 1:
        raise ValueError(f"expected_f2_decision: need 0 <= low < high <= 1, got low={low}, high={high}.")
    single = probs.ndim == 1
    rows = probs.detach().double().cpu().reshape(-1, probs.shape[-1])
    if search == "ranked":
        out = torch.cat([_ranked(chunk, beta, zero_division) for chunk in rows.split(CHUNK)]) if len(rows) else rows.bool()
        return out[0] if single else out
    out = torch.zeros(rows.shape, dtype=torch.bool)
    for i, p in enumerate(rows):
        sets = candidate_sets(p, low, high, max_uncertain)
        out[i] = sets[int(expected_fbeta(p, sets, beta, zero_division).argmax())]
    return out[0] if single else out
