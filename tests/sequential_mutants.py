"""Mutations of the sequential plan's bounds, shared by the statistics and engine tests."""

from __future__ import annotations

import numpy as np
from scipy import stats

from certifier.confidence_sequences import ConfidenceSequence


class PeekingClopperPearson(ConfidenceSequence):
    """Mutation: a fixed-n Clopper-Pearson bound, recomputed at every look as if it were anytime-valid."""

    name = "peeking-clopper-pearson"

    def lower(self, successes, trials, alpha):
        s = np.asarray(successes, dtype=np.float64)
        with np.errstate(all="ignore"):
            value = stats.beta.ppf(alpha, np.maximum(s, 1e-300), np.asarray(trials) - s + 1)
        out = np.where(s > 0, value, 0.0)
        return float(out) if out.ndim == 0 else out

    def upper(self, successes, trials, alpha):
        s = np.asarray(successes, dtype=np.float64)
        t = np.asarray(trials, dtype=np.float64)
        with np.errstate(all="ignore"):
            value = stats.beta.ppf(1 - alpha, s + 1, np.maximum(t - s, 1e-300))
        out = np.where(s < t, value, 1.0)
        return float(out) if out.ndim == 0 else out
