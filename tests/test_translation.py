"""Translation smoothing: the views are cyclic shifts, and the exact certificate by brute force.

The brute force runs a real ONNX model through the shipped path (certifier.load, the
engine's enumeration, views, certify). The input is a one-hot image x (a single 1 at the
top-left pixel), so every cyclic shift roll(x, u) is a different image whose 1 sits at u,
and a linear model with weight 1 from pixel u to class L[u] labels roll(x, u) with any
label field L over the torus we like. The smoothed classifier at roll(x, t) is then the
majority of L over t + W, which the test also computes on its own. For every input and
every shift u of the torus that the certificate covers, g(roll(x, t + u)) must equal
g(roll(x, t)); for label fields built as worst cases the first shift outside the
certified set must flip g, so the rule is tight; and deliberately wrong rules fail.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import certifier
import certifier_plugins.translation as translation
from certifier.methods import Votes
from certifier.plugins import get_method
from certifier.stats import clopper_pearson_lower

from onnx_models import linear_model, save

SIDE = 7  # the torus of a 7x7 image: every shift is one of 49
CLASSES = 3


def window(k: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1)]


def smoothed_by_hand(labels: np.ndarray, k: int) -> np.ndarray:
    """g(roll(x, t)) for every t on the torus: the majority of L over t + W, ties to the lower class."""
    out = np.zeros(labels.shape, dtype=np.int64)
    for ty, tx in itertools.product(range(SIDE), repeat=2):
        votes = np.zeros(CLASSES, dtype=np.int64)
        for dy, dx in window(k):
            votes[labels[(ty + dy) % SIDE, (tx + dx) % SIDE]] += 1
        out[ty, tx] = int(np.argmax(votes))
    return out


def changed_by_counting(k: int, uy: int, ux: int) -> int:
    """How many window positions a shift u moves outside the window, by counting sets (not the formula)."""
    positions = set(window(k))
    return sum(1 for dy, dx in positions if (dy + uy, dx + ux) not in positions)


def certify_torus(labels: np.ndarray, k: int, tmp_path, plugin: str = "translation"):
    """Certify roll(x, t) for every t through the shipped path; (predictions, certificates) as SIDE x SIDE arrays."""
    weights = np.zeros((SIDE * SIDE, CLASSES), dtype=np.float32)
    weights[np.arange(SIDE * SIDE), labels.reshape(-1)] = 1.0
    path = save(linear_model(weights, np.zeros(CLASSES), (1, SIDE, SIDE)), tmp_path / "torus.onnx")
    one_hot = np.zeros((1, SIDE, SIDE), dtype=np.float32)
    one_hot[0, 0, 0] = 1.0
    shifted = np.stack([np.roll(one_hot, (ty, tx), axis=(1, 2)) for ty, tx in itertools.product(range(SIDE), repeat=2)])
    run = certifier.load(path, plugin=plugin, options={"k": k})
    results = run.certify(shifted, batch_size=7)
    assert all(r.details["views"] == (2 * k + 1) ** 2 for r in results)
    return results


def certified(details: dict, uy: int, ux: int) -> bool:
    by_x = details["largest_t_y_by_t_x"]
    return abs(ux) < len(by_x) and abs(uy) <= by_x[abs(ux)]


def check(labels: np.ndarray, k: int, tmp_path, plugin: str = "translation") -> dict:
    """Every certified (t, u): does g keep its prediction? Returns counts of what was checked and found."""
    results = certify_torus(labels, k, tmp_path, plugin)
    predictions = np.array([r.prediction for r in results]).reshape(SIDE, SIDE)
    by_hand = smoothed_by_hand(labels, k)
    found = {"pairs": 0, "violations": 0, "mismatches": int((predictions != by_hand).sum()), "positive": 0,
             "tight": 0}
    shifts = range(-(SIDE // 2), SIDE // 2 + 1)  # every shift of the torus once
    for result in results:
        ty, tx = divmod(result.index, SIDE)
        assert result.exact
        details = result.details
        for uy, ux in itertools.product(shifts, repeat=2):
            if not certified(details, uy, ux):
                continue
            found["pairs"] += 1
            found["positive"] += (uy, ux) != (0, 0)
            if by_hand[(ty + uy) % SIDE, (tx + ux) % SIDE] != by_hand[ty, tx]:
                found["violations"] += 1
        # the largest Chebyshev radius is what the staircase says
        radius = int(result.radius)
        assert all(certified(details, uy, ux) for uy, ux in itertools.product(range(-radius, radius + 1), repeat=2))
        # the first shifts just outside the staircase: how many of them flip g (tightness)
        for ux, largest in enumerate(details["largest_t_y_by_t_x"]):
            outside = largest + 1
            if outside <= SIDE // 2 and by_hand[(ty + outside) % SIDE, (tx + ux) % SIDE] != by_hand[ty, tx]:
                found["tight"] += 1
    return found


def random_field(rng: np.random.Generator, probabilities) -> np.ndarray:
    return rng.choice(len(probabilities), size=(SIDE, SIDE), p=probabilities)


def worst_case_field(k: int, shift: tuple[int, int], tie: bool, rng: np.random.Generator) -> np.ndarray | None:
    """A label field where the shift flips g with the margin at x = roll(one_hot, 0) as large as the rule allows.

    The m window positions the shift loses are class 1 (A), the m it gains class 0 (B), and
    the window's other positions are split so that nA - nB = 2m (tie: after the shift A and
    B tie and the lower index B wins) or 2m - 1 (A loses by one vote).
    """
    size = (2 * k + 1) ** 2
    m = changed_by_counting(k, *shift)
    positions = set(window(k))
    moved = {((dy + shift[0]), (dx + shift[1])) for dy, dx in positions}
    lost, gained, overlap = positions - moved, moved - positions, sorted(positions & moved)
    labels = np.full((SIDE, SIDE), 2, dtype=np.int64)
    if tie:
        # nA = m + a, nB = b, nC = size - m - a - b with a = b + m, and nC <= nB so B is the runner-up
        b = max(0, -(-(size - 2 * m) // 3))
        a = b + m
    else:
        # no class 2 in the window: nA = m + a, nB = size - m - a, so nA - nB = 2m - 1
        a = (size - 1) // 2
        b = size - m - a
    if b < 0 or a + b > len(overlap):
        return None
    rng.shuffle(overlap)
    for dy, dx in lost:
        labels[dy % SIDE, dx % SIDE] = 1
    for dy, dx in gained:
        labels[dy % SIDE, dx % SIDE] = 0
    for number, (dy, dx) in enumerate(overlap):
        labels[dy % SIDE, dx % SIDE] = 1 if number < a else 0 if number < a + b else 2
    if len({(dy % SIDE, dx % SIDE) for dy, dx in positions | moved}) != len(positions | moved):
        return None  # the window and its shift wrap onto each other on this torus
    return labels


FIELDS = [(0.34, 0.33, 0.33), (0.5, 0.3, 0.2), (0.2, 0.1, 0.7), (0.1, 0.85, 0.05), (0.0, 0.95, 0.05), (0.6, 0.4, 0.0)]


def all_fields(k: int):
    rng = np.random.default_rng(10 + k)
    fields = [random_field(rng, p) for p in FIELDS for _ in range(3)]
    fields.append(np.full((SIDE, SIDE), 1))
    for shift in [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2)]:
        for tie in (False, True):
            field = worst_case_field(k, shift, tie, rng)
            if field is not None:
                fields.append(field)
    return fields


@pytest.mark.parametrize("k", [1, 2])
def test_no_certified_shift_changes_the_smoothed_prediction(k, tmp_path):
    totals = {"pairs": 0, "violations": 0, "mismatches": 0, "positive": 0, "tight": 0}
    for field in all_fields(k):
        found = check(field, k, tmp_path)
        for key in totals:
            totals[key] += found[key]
    assert totals["mismatches"] == 0, "the engine's smoothed prediction is not the majority with the lowest-index tie-break"
    assert totals["violations"] == 0, "a certified cyclic shift changes the smoothed prediction"
    assert totals["positive"] > 500  # not vacuous: many non-zero shifts are certified and checked
    assert totals["tight"] > 20  # and many shifts just outside the certified set do flip g


@pytest.mark.parametrize("k,shift,tie", [
    (1, (0, 1), False), (1, (1, 1), False), (2, (0, 1), False), (2, (1, 1), False), (2, (0, 2), False),
    (2, (1, 2), False),
    # a tie needs nA - nB = 2 m(u*) <= |W|
    (1, (0, 1), True), (2, (0, 1), True), (2, (1, 1), True), (2, (0, 2), True),
])
def test_the_rule_is_tight_on_worst_case_fields(k, shift, tie, tmp_path):
    """Built so that shift u* flips g (by one vote, or by the tie-break) while the margin at x is the
    largest the rule allows: the rule certifies every shift that changes fewer views and not u*."""
    field = worst_case_field(k, shift, tie, np.random.default_rng(3))
    assert field is not None
    results = certify_torus(field, k, tmp_path)
    at_x = results[0]
    by_hand = smoothed_by_hand(field, k)
    assert at_x.prediction == 1 == by_hand[0, 0]
    m = changed_by_counting(k, *shift)
    assert at_x.details["changed_views_allowed"] == m - 1
    assert not certified(at_x.details, *shift)
    assert by_hand[shift[0] % SIDE, shift[1] % SIDE] != 1  # u* does flip g


def test_changed_views_formula_matches_counting():
    for k in range(4):
        for uy, ux in itertools.product(range(-2 * k - 2, 2 * k + 3), repeat=2):
            assert translation.changed_views(k, uy, ux) == changed_by_counting(k, uy, ux)


@pytest.mark.parametrize("counts,prediction,budget", [
    ([5, 4], 0, 0),         # 9 views, A = 0 by one vote
    ([4, 5], 1, 0),         # (5 - 4 - 1) // 2
    ([3, 3, 3], 0, 0),      # three-way tie: the lowest index
    ([9, 0], 0, 4),
    ([0, 9], 1, 4),         # runner-up 0 has the lower index: (9 - 0 - 1) // 2
    ([0, 1, 8], 2, 3),      # runner-up is class 1: (8 - 1 - 1) // 2
    ([1, 7, 1], 1, 2),      # runner-up class 0 (tied with 2, lower index): (7 - 1 - 1) // 2
    ([1, 1, 7], 2, 2),
])
def test_the_rule_and_its_tie_break(counts, prediction, budget):
    method = get_method("translation")(options=get_method("translation").Options(k=1))
    votes = Votes({"any": np.array(counts)}, clopper_pearson_lower)
    certificate = method.certify(None, votes, alpha=0.5)
    assert certificate.exact and certificate.prediction == prediction == votes.top()
    assert certificate.details["changed_views_allowed"] == budget
    by_x = certificate.details["largest_t_y_by_t_x"]
    for ux, largest in enumerate(by_x):
        for uy in range(3):
            assert (uy <= largest) == (translation.changed_views(1, uy, ux) <= budget)


def test_the_rule_refuses_votes_that_are_not_all_views():
    method = get_method("translation")()
    with pytest.raises(certifier.CertifyError, match="needs all"):
        method.certify(None, Votes({"any": np.array([30, 10])}, clopper_pearson_lower), 0.001)


# -- deliberately wrong rules must fail the brute force ------------------------------------


def brute_force_total(tmp_path, k: int = 1, plugin: str = "translation") -> dict:
    totals = {"violations": 0, "mismatches": 0}
    for field in all_fields(k):
        found = check(field, k, tmp_path, plugin)
        totals["violations"] += found["violations"]
        totals["mismatches"] += found["mismatches"]
    return totals


@pytest.mark.parametrize("mutant", ["no tie-break", "no halving", "changed views by the longer axis only"])
def test_wrong_rules_fail_the_brute_force(mutant, monkeypatch, tmp_path):
    if mutant == "no tie-break":
        monkeypatch.setattr(translation, "vote_budget", lambda top, na, runner_up, nb: (na - nb) // 2)
    elif mutant == "no halving":
        monkeypatch.setattr(translation, "vote_budget", lambda top, na, runner_up, nb: na - nb - int(runner_up < top))
    else:
        monkeypatch.setattr(translation, "changed_views",
                            lambda k, uy, ux: (2 * k + 1) * np.maximum(np.abs(uy), np.abs(ux)))
    assert brute_force_total(tmp_path)["violations"] > 0


def test_a_prediction_with_another_tie_break_fails_the_brute_force(tmp_path, register_methods):
    class HighestIndexWins(translation.Translation):
        name = "translation-highest-index"

        def certify(self, selection, estimation, alpha):
            counts = estimation.total()
            reversed_votes = Votes({"any": counts[::-1].copy()}, clopper_pearson_lower)
            certificate = super().certify(None, reversed_votes, alpha)
            return certifier.Certificate(len(counts) - 1 - certificate.prediction, certificate.radius, exact=True,
                                         details=certificate.details)

    register_methods(HighestIndexWins)
    assert brute_force_total(tmp_path, plugin="translation-highest-index")["mismatches"] > 0


# -- the views ---------------------------------------------------------------------------------


def test_views_are_numpy_rolls_for_every_shift_in_the_window():
    method = get_method("translation")(options=get_method("translation").Options(k=2))
    method.prepare((3, 6, 8), {})
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 6, 8)).astype(np.float32)
    views = method.views(np.broadcast_to(x, (25, 3, 6, 8)), np.arange(25), "any")
    expected = [np.roll(x[0], shift, axis=(1, 2)) for shift in window(2)]
    assert np.array_equal(views, np.stack(expected))
    # a batch of different inputs (training) shifts each by its own view
    batch = rng.random((6, 3, 6, 8)).astype(np.float32)
    index = np.array([0, 24, 12, 3, 7, 20])
    rows = method.views(batch, index, "any")
    for row, number in zip(range(6), index):
        assert np.array_equal(rows[row], np.roll(batch[row], window(2)[number], axis=(1, 2)))


def test_training_samples_are_shifts_of_their_own_inputs():
    method = get_method("translation")(options=get_method("translation").Options(k=1))
    rng = np.random.default_rng(1)
    batch = rng.random((40, 1, 5, 5)).astype(np.float32)
    samples = method.sample(batch, np.random.default_rng(2), "any")
    used = set()
    for x, view in zip(batch, samples):
        matches = [shift for shift in window(1) if np.array_equal(view, np.roll(x, shift, axis=(1, 2)))]
        assert len(matches) == 1
        used.add(matches[0])
    assert len(used) == 9


def test_shapes_it_cannot_shift_are_refused():
    method = get_method("translation")(options=get_method("translation").Options(k=3))
    with pytest.raises(certifier.CertifyError, match="shifts images"):
        method.prepare((10,), {})
    with pytest.raises(certifier.CertifyError, match="larger than the 5x9 image; use -o k 2 or less"):
        method.prepare((1, 5, 9), {})
    method.prepare((1, 7, 7), {})


def test_k_zero_is_one_view_and_certifies_no_shift():
    method = get_method("translation")(options=get_method("translation").Options(k=0))
    certificate = method.certify(None, Votes({"any": np.array([0, 1])}, clopper_pearson_lower), 0.001)
    assert certificate.prediction == 1 and certificate.radius == 0
    assert certificate.details["largest_t_y_by_t_x"] == [0]
