"""DSSN and SSN: smoothing with splitting noise (Levine and Feizi, ICML 2021), L1 radius.

Splitting noise cuts [0, 1] at s, s + 2 lambda, s + 4 lambda, ... (and s - 2 lambda, ...)
and replaces a pixel by the centre of the piece it falls in. Each pixel changes between
x and x' only when a cut falls between them, which happens with probability
|x_i - x'_i| / (2 lambda) whatever the joint law of the cuts, so the smoothed class
probabilities are 1/(2 lambda)-Lipschitz in L1 (the paper's Theorem 2).

- ``ssn`` draws the cuts independently per pixel, s_i ~ U(0, 2 lambda), and certifies
  like uniform additive noise: radius 2 lambda (pA_lower - 1/2) with Clopper-Pearson.
- ``dssn`` is for inputs on the 1/q grid: cut i of view j is
  s_i = (((v_i + j) mod L) + 1/2) / q with L = 2 lambda q and a fixed offset vector v, so
  the L views are every value the shared shift can take. The votes are exact and so is
  the certificate: L1 radius floor((n_A - n_B - [B < A]) / 2) / q.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings

import numpy as np
from pydantic import Field, create_model

import certifier
from certifier import Certificate, CertifyError, SoundnessCheck, Votes, hookimpl, is_broadcast, recorded_json
from certifier_plugins._lambda import LambdaSmoothing, lambda_field

#: ONNX metadata_props key where ``certify train`` records the offsets a DSSN model was trained with.
METADATA_KEY = "certifier.dssn"
#: How far (in quantization steps) an input may sit from the grid and still count as on it:
#: float32 pixels k / q carry a relative error of 6e-8.
GRID_TOLERANCE = 0.01


def split_centers(x: np.ndarray, cut: np.ndarray, width: float) -> np.ndarray:
    """Centre of the piece of [0, 1] holding x, when [0, 1] is cut at cut + width * n for all integers n.

    The pieces are half-open, (cut - width, cut]: a pixel equal to a cut belongs to the
    lower piece, as x_i > s_i decides in the paper. Works in place on ``cut`` (float32).
    """
    upper = cut
    # first cut at or above x
    offset = np.subtract(x, upper)
    offset /= np.float32(width)
    np.ceil(offset, out=offset)
    offset *= np.float32(width)
    upper += offset
    lower = upper - np.float32(width)
    np.minimum(upper, np.float32(1.0), out=upper)
    np.maximum(lower, np.float32(0.0), out=lower)
    upper += lower
    upper *= np.float32(0.5)
    return upper


def quantized_split_centers(levels: np.ndarray, shifts: np.ndarray, views: int, q: int) -> np.ndarray:
    """DSSN's noisy pixels, exactly, from integer levels x_i = k_i / q and cut indices m_i.

    The cut is s_i = (m_i + 1/2) / q, repeated every w = L / q. In units of 1 / (2q), the
    first cut at or above k is c = 2 (floor((k - m - 1) / L) + 1) L + 2 m + 1 (k is an
    integer and the cut a half-integer, so they never tie), and the noisy pixel is
    (min(c, 2q) + max(c - 2L, 0)) / (4q). Integer arithmetic: a pixel's value depends on
    (k_i, m_i) only, bit for bit.
    """
    cut = np.subtract(levels, shifts, dtype=np.int64 if views > 2**28 else np.int32)
    cut -= 1
    cut //= views
    cut += 1
    cut *= 2 * views
    cut += shifts
    cut += shifts
    cut += 1
    lower = cut - 2 * views
    np.minimum(cut, 2 * q, out=cut)
    np.maximum(lower, 0, out=lower)
    cut += lower
    return cut.astype(np.float32) / np.float32(4 * q)


def offset_vector(seed: int, views: int, size: int) -> np.ndarray:
    """v = numpy RandomState(seed).randint(L, size=d), as the authors' code draws it."""
    return np.random.RandomState(seed).randint(views, size=size)


class SSN(LambdaSmoothing):
    """Splitting noise with independent cuts s_i ~ U(0, 2 lambda); radius 2 lambda (pA_lower - 1/2)."""

    name = "ssn"
    description = ("splitting noise, independent per pixel (Levine and Feizi 2021): "
                   "L1 radius 2 lambda (pA_lower - 1/2)")

    Options = create_model("SSNOptions", __base__=certifier.Options,
                           **{"lambda": lambda_field("cuts every 2 lambda, at a uniform random phase per pixel")})

    def sample(self, x: np.ndarray, rng: np.random.Generator, group: str) -> np.ndarray:
        cut = rng.random(x.shape, dtype=np.float32)
        cut *= np.float32(2.0 * self.lam)
        return split_centers(x, cut, 2.0 * self.lam)

    def soundness_checks(self):
        # The noisy pixel is the centre of its piece, clipped to [0, 1], so a hyperplane's boundary moves near
        # the edges; one pixel's classifier [x_k > 1/2] has a known one. For lambda <= 1/2 the cuts are as
        # likely mirrored about 1/2 as not, so the smoothed classifier switches at x_k = 1/2; for
        # 1/2 <= lambda < 1 a noisy pixel is above 1/2 exactly when the cut s_k ~ U(0, 2 lambda) is below
        # x_k, with probability x_k / (2 lambda), which is 1/2 at x_k = lambda.
        if self.lam >= 1:
            return ()
        boundary = 0.5 if self.lam <= 0.5 else self.lam
        return (SoundnessCheck("pixel", threshold=0.5, boundary=boundary,
                               reason=f"[x_k > 1/2] switches at x_k = {boundary:g} under splitting noise"),)


class DSSN(LambdaSmoothing):
    """All L = 2 lambda q views of an input on the 1/q grid; exact votes, exact L1 radius."""

    name = "dssn"
    description = ("deterministic splitting noise (Levine and Feizi 2021): exact L1 radius "
                   "floor((nA - nB - [B < A]) / 2) / q from all 2 lambda q views")
    deterministic = True

    Options = create_model(
        "DSSNOptions", __base__=certifier.Options,
        **{
            "lambda": lambda_field("cuts every 2 lambda; L = floor(2 lambda q) views"),
            "q": (int, Field(255, ge=1, le=65535,
                             description="quantization levels per pixel: inputs are multiples of 1/q")),
            "seed": (int, Field(0, ge=0, lt=2**32,
                                description="seed of the offset vector v (default: the model's metadata)")),
            "quantize": (bool, Field(False, description="round inputs that are not on the 1/q grid (with a "
                                                        "warning) instead of refusing them")),
        },
    )

    def __init__(self, sigma: float | None = None, options=None):
        super().__init__(sigma=sigma, options=options)
        self.q = int(self.options.q)
        self.seed = int(self.options.seed)
        # The reference code takes int(2 lambda q); the tolerance keeps 2 * 0.3 * 255 = 152.999... at 153.
        self.levels = math.floor(2.0 * self.lam * self.q + 1e-9)
        if self.levels > 2**28:
            raise CertifyError(f"plugin dssn: 2 lambda q = {2 * self.lam * self.q:g} views is more than it can run; "
                               f"lower lambda (or --sigma) or q")
        if self.levels < 1:
            raise CertifyError(f"plugin dssn: 2 lambda q = {2 * self.lam * self.q:g} is below 1 view; "
                               f"raise lambda (or --sigma) or q")
        self._offsets: tuple[tuple[int, ...], np.ndarray] | None = None

    # -- the offset vector and the model's record of it -------------------------

    def offsets(self, input_shape: tuple[int, ...]) -> np.ndarray:
        """The offset vector v over the input flattened in C, H, W order."""
        input_shape = tuple(int(s) for s in input_shape)
        cached = self._offsets
        if cached is None or cached[0] != input_shape:
            v = offset_vector(self.seed, self.levels, int(np.prod(input_shape)))
            cached = (input_shape, v.astype(np.int32))
            self._offsets = cached
        return cached[1]

    def record(self, input_shape: tuple[int, ...]) -> dict:
        """What a model must have been trained with for these certificates to be about it."""
        v = offset_vector(self.seed, self.levels, int(np.prod(input_shape)))
        return {
            "seed": self.seed,
            "q": self.q,
            "levels": self.levels,
            "lambda": self.levels / (2 * self.q),
            "input_shape": [int(s) for s in input_shape],
            "offsets": "numpy RandomState(seed).randint(levels, size=d), input flattened in C, H, W order",
            "offsets_sha256": hashlib.sha256(v.astype("<i8").tobytes()).hexdigest(),
        }

    def training_metadata(self, input_shape: tuple[int, ...]) -> dict[str, str]:
        return {METADATA_KEY: json.dumps(self.record(input_shape))}

    def prepare(self, input_shape: tuple[int, ...], metadata) -> None:
        expected = self.record(input_shape)
        recorded = recorded_json(metadata, METADATA_KEY)
        if recorded is None:
            if metadata:
                warnings.warn(
                    f"dssn: the model does not record its DSSN offsets ({METADATA_KEY} metadata); assuming seed "
                    f"{self.seed} and L = {self.levels} views, which must be what it was trained with")
        else:
            names = {"levels": "views L", "q": "q", "seed": "seed", "input_shape": "input shape"}
            problems = [
                f"{label} {_show(recorded.get(key))} in the model, {_show(expected[key])} now"
                for key, label in names.items() if recorded.get(key) != expected[key]
            ]
            if problems:
                raise CertifyError(
                    "the model was trained with other DSSN offsets (" + "; ".join(problems) + "): drop -o lambda, "
                    "--sigma, -o q and -o seed to use the model's, and certify inputs of the shape it was trained on"
                )
            if recorded.get("offsets_sha256") not in (None, expected["offsets_sha256"]):
                raise CertifyError(f"the offset vector drawn from seed {self.seed} differs from the one the model "
                                   f"was trained with (its hash in {METADATA_KEY}); this numpy draws another v")
        self.offsets(input_shape)

    def settings(self) -> dict:
        return {**super().settings(), "views": self.levels, "effective_lambda": self.levels / (2 * self.q)}

    def soundness_checks(self):
        # every input of a tiny lattice and every view of each: small q keeps the search small
        q = self.q if self.q <= 16 else 16
        return (SoundnessCheck("exhaustive", grid=q, options={} if q == self.q else {"q": q},
                               reason="the smoothed classifier on every point of the 1/q lattice, by brute force"),)

    # -- inputs and views ----------------------------------------------------------

    def check_inputs(self, x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * self.q
        levels = np.rint(scaled)
        off = np.abs(scaled - levels) > GRID_TOLERANCE
        if off.any():
            example = float(np.asarray(x).reshape(-1)[np.flatnonzero(off.reshape(-1))[0]])
            if not self.options.quantize:
                raise CertifyError(
                    f"plugin dssn certifies inputs on the 1/{self.q} grid, but {int(off.sum())} values are not "
                    f"multiples of 1/{self.q} (e.g. {example:.6g}); pass -o q N with the data's number of levels, "
                    f"or -o quantize true to round them (the certificate is then for the rounded input)"
                )
            warnings.warn(
                f"dssn: input values off the 1/{self.q} grid are rounded to the nearest level (-o quantize true); "
                f"certificates are for the rounded inputs"
            )
        return (levels / self.q).astype(np.float32)

    def num_views(self, input_shape: tuple[int, ...]) -> int:
        return self.levels

    def views(self, x: np.ndarray, index: np.ndarray, group: str) -> np.ndarray:
        if is_broadcast(x):  # round the one input once
            levels = np.rint(x[:1].reshape(1, -1) * np.float32(self.q)).astype(np.int32)
        else:
            levels = np.rint(x.reshape(len(x), -1) * np.float32(self.q)).astype(np.int32)
        shifts = self.offsets(x.shape[1:])[None, :] + np.asarray(index, dtype=np.int32)[:, None]
        shifts %= self.levels
        return quantized_split_centers(levels, shifts, self.levels, self.q).reshape(x.shape)

    # -- the certificate -----------------------------------------------------------

    def certify(self, selection: Votes | None, estimation: Votes, alpha: float) -> Certificate:
        counts = estimation.total()
        if int(counts.sum()) != self.levels:
            raise CertifyError(f"plugin dssn got {int(counts.sum())} votes for one input; it needs all "
                               f"L = {self.levels} views exactly once")
        order = np.argsort(-counts, kind="stable")  # ties go to the lower class index
        top = int(order[0])
        runner_up = int(order[1]) if len(order) > 1 else top + 1
        top_votes = int(counts[top])
        runner_up_votes = int(counts[runner_up]) if len(order) > 1 else 0
        # Moving the input by k steps of 1/q (in L1) changes at most k of the L views;
        # each changed view moves at most one vote from the top class to the runner-up.
        steps = (top_votes - runner_up_votes - int(runner_up < top)) // 2
        return Certificate(
            top, steps / self.q, exact=True,
            details={"votes": top_votes, "runner_up": runner_up, "runner_up_votes": runner_up_votes,
                     "views": self.levels, "radius_steps": steps},
        )


def _show(value) -> str:
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)


@hookimpl
def register_methods(register):
    register(DSSN)
    register(SSN)
