"""The contract's shared pieces: one rule for top class, lower bound and abstain at 1/2, which
the Gaussian and L1 certificates build on; the helper that tells a broadcast batch."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import certifier
from certifier import Votes, gaussian_certificate, is_broadcast, lower_bound_certificate
from certifier.plugins import get_method

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def votes(counts, bound, group="any-name"):
    return Votes({group: np.array(counts)}, lambda successes, trials, alpha: bound)


@pytest.mark.parametrize("rule", [
    lambda s, e, a: gaussian_certificate(s, e, a, 0.5),
    lambda s, e, a: get_method("uniform")(sigma=0.5).certify(s, e, a),
    lambda s, e, a: get_method("ssn")(sigma=0.5).certify(s, e, a),
    lambda s, e, a: lower_bound_certificate(s, e, a, lambda p: 1.0),
], ids=["gaussian", "uniform", "ssn", "shared"])
def test_every_rule_abstains_at_one_half_and_certifies_above(rule):
    selection = votes([1, 9], 0.0)
    at_half = rule(selection, votes([5, 5], 0.5), 0.01)
    assert at_half.prediction is None and at_half.radius == 0 and at_half.details["p_lower"] == 0.5
    above = rule(selection, votes([2, 8], 0.6), 0.01)
    assert above.prediction == 1 and above.details == {"p_lower": 0.6, "top_votes": 8}
    assert above.radius > 0


def test_the_radii_built_on_the_shared_rule():
    selection, estimation = votes([0, 3], 0.0), votes([1, 9], 0.75)
    assert gaussian_certificate(selection, estimation, 0.01, 0.5).radius == 0.5 * stats.norm.ppf(0.75)
    uniform = get_method("uniform")(sigma=0.5)
    assert uniform.certify(selection, estimation, 0.01).radius == 2.0 * uniform.lam * 0.25
    scaled = gaussian_certificate(selection, estimation, 0.01, 0.5, scale=0.5, conditional="assumed")
    assert scaled.radius == 0.5 * stats.norm.ppf(0.75) * 0.5 and scaled.conditional == "assumed"


def test_the_shared_rule_takes_one_vote_group():
    two = Votes({"left": np.array([1, 2]), "right": np.array([2, 1])}, lambda *_: 0.9)
    with pytest.raises(certifier.CertifyError, match="one vote group, got groups left, right"):
        lower_bound_certificate(two, two, 0.01, lambda p: 1.0)


def test_is_broadcast():
    one = np.zeros((1, 3), np.float32)
    assert is_broadcast(np.broadcast_to(one, (5, 3)))
    assert not is_broadcast(np.broadcast_to(one, (1, 3)))  # one row: nothing to share
    assert not is_broadcast(np.zeros((5, 3), np.float32))
    assert not is_broadcast(np.zeros((0, 3), np.float32))


def test_no_built_in_plugin_names_the_default_vote_group():
    """The default group's name is the core's business: one-group plugins use the shared rule or
    Votes.total(), never votes["model"]."""
    for path in sorted(PLUGINS.glob("*.py")):
        literals = {node.value for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert "model" not in literals, path.name


def test_dssn_does_not_import_another_plugin():
    tree = ast.parse((PLUGINS / "dssn.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("certifier_plugins.") and not name.split(".")[1].startswith("_")
                   for name in imported if name)
