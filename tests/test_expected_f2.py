"""Planet's expected-F2 decision rule against brute force: every outcome, every subset."""

from __future__ import annotations

from itertools import product

import pytest
import torch

from models.decide import candidate_sets, count_distribution, expected_f2_decision, expected_fbeta
from tasks.fbeta import fbeta_from_counts


def brute_expected(probs: torch.Tensor, chosen: tuple[bool, ...], beta: float = 2.0, zero_division: float = 1.0) -> float:
    """E[F-beta] by enumerating all 2^C outcomes of independent tags."""
    total = 0.0
    s = torch.tensor(chosen)
    for outcome in product((False, True), repeat=probs.numel()):
        y = torch.tensor(outcome)
        chance = float(torch.where(y, probs.double(), 1 - probs.double()).prod())
        tp, fp, fn = (s & y).sum(), (s & ~y).sum(), (~s & y).sum()
        total += chance * float(fbeta_from_counts(tp, fp, fn, beta, zero_division))
    return total


def brute_best(probs: torch.Tensor, beta: float = 2.0, zero_division: float = 1.0) -> tuple[float, set[tuple[bool, ...]]]:
    """The best expected score over all 2^C subsets, and every subset reaching it."""
    scores = {s: brute_expected(probs, s, beta, zero_division) for s in product((False, True), repeat=probs.numel())}
    best = max(scores.values())
    return best, {s for s, v in scores.items() if v > best - 1e-12}


def test_count_distribution_is_the_poisson_binomial():
    probs = torch.tensor([0.1, 0.5, 0.8])
    member = torch.tensor([[True, True, True], [False, True, False], [False, False, False]])
    d = count_distribution(probs, member)
    # all three: P(0) = .9 * .5 * .2, P(3) = .1 * .5 * .8
    assert d[0, 0].item() == pytest.approx(0.09) and d[0, 3].item() == pytest.approx(0.04)
    assert torch.allclose(d.sum(1), torch.ones(3, dtype=torch.float64))
    assert d[1, :2].tolist() == pytest.approx([0.5, 0.5]) and d[2, 0].item() == 1.0


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_expected_fbeta_matches_enumeration(beta, zero_division):
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(6, generator=g)
    sets = [tuple(bool(v) for v in (torch.rand(6, generator=g) < 0.5)) for _ in range(12)] + [(False,) * 6, (True,) * 6]
    got = expected_fbeta(probs, torch.tensor(sets), beta, zero_division)
    want = [brute_expected(probs, s, beta, zero_division) for s in sets]
    assert got.tolist() == pytest.approx(want, abs=1e-12)


def test_certain_tags_score_like_the_metric():
    # probabilities 0/1: the expectation is the one outcome's F2
    probs = torch.tensor([1.0, 0.0, 1.0, 0.0])
    chosen = torch.tensor([True, True, False, False])
    # tp 1, fp 1, fn 1: 5 / (5 + 4 + 1)
    assert expected_fbeta(probs, chosen).item() == pytest.approx(0.5)
    assert expected_f2_decision(probs).tolist() == [True, False, True, False]


@pytest.mark.parametrize("seed", range(8))
def test_decision_matches_brute_force_over_all_subsets(seed):
    g = torch.Generator().manual_seed(seed)
    n = 4 + seed % 4  # 4..7 tags: up to 128 subsets x 128 outcomes
    # a mix of confident and doubtful tags, as a trained model gives
    probs = torch.rand(n, generator=g) ** torch.tensor(3.0) if seed % 2 else torch.rand(n, generator=g)
    best, winners = brute_best(probs)
    full = expected_f2_decision(probs, search="subsets", low=0.0, high=1.0)  # every subset searched
    assert tuple(full.tolist()) in winners
    banded = expected_f2_decision(probs, search="subsets")  # the default band: confident tags fixed
    assert expected_fbeta(probs, banded).item() == pytest.approx(best, abs=1e-9)
    ranked = expected_f2_decision(probs)  # only the k likeliest tags, k = 0..n
    assert tuple(ranked.tolist()) in winners


def test_ranked_search_is_exact_beyond_the_enumeration_cap():
    """17 doubtful tags: the capped enumeration fixes 5 of them and can lose; the ranked search
    matches the enumeration of all 2^17 sets (exact expectations, no brute force over outcomes)."""
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(6, 17, generator=g) * 0.9 + 0.05
    ranked = expected_f2_decision(probs)
    capped = expected_f2_decision(probs, search="subsets")
    every = expected_f2_decision(probs, search="subsets", low=0.0, high=1.0, max_uncertain=17)
    for p, r, c, e in zip(probs, ranked, capped, every):
        er, ec, ee = (expected_fbeta(p, d).item() for d in (r, c, e))
        assert er == pytest.approx(ee, abs=1e-12) and er >= ec - 1e-12


def test_decision_beats_thresholds_in_expectation_and_needs_context():
    # a 0.3 tag is worth adding beside one sure tag at F2? compare with brute force, and show the
    # same probability is decided differently with different company (no threshold can do that)
    alone = torch.tensor([0.99, 0.3, 0.02, 0.02])
    crowd = torch.tensor([0.99, 0.3, 0.6, 0.6])
    a, c = expected_f2_decision(alone, search="subsets"), expected_f2_decision(crowd, search="subsets")
    for probs, got in ((alone, a), (crowd, c)):
        best, winners = brute_best(probs)
        assert tuple(got.tolist()) in winners
        assert expected_fbeta(probs, got).item() >= expected_fbeta(probs, probs >= 0.2).item() - 1e-12
    g = torch.Generator().manual_seed(5)
    found_context = False
    for _ in range(200):  # some probability p is kept in one image and dropped in another
        probs = torch.rand(2, 5, generator=g)
        probs[1, 0] = probs[0, 0]
        d = expected_f2_decision(probs)
        found_context |= bool(d[0, 0] != d[1, 0])
    assert found_context


def test_batch_and_cap():
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(5, 17, generator=g)
    batch = expected_f2_decision(probs)
    assert batch.shape == (5, 17) and batch.dtype == torch.bool
    assert all(torch.equal(batch[i], expected_f2_decision(probs[i])) for i in range(5))
    assert expected_f2_decision(probs[:0]).shape == (0, 17)
    sets = candidate_sets(probs[0], max_uncertain=4)
    assert sets.shape == (16, 17) and len({tuple(r.tolist()) for r in sets}) == 16
    # beyond the cap the most confident band tags are fixed: the likeliest in, the unlikeliest out
    varying = (sets != sets[0]).any(0)
    assert int(varying.sum()) == 4
    order = probs[0].argsort()
    assert sets[:, order[-1]].all() and not sets[:, order[0]].any()
    with pytest.raises(ValueError, match="low < high"):
        expected_f2_decision(probs, low=0.5, high=0.5)
    with pytest.raises(ValueError, match="search 'all'"):
        expected_f2_decision(probs, search="all")
