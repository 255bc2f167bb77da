"""What ``certify attack`` writes and what ``certify report`` says about it.

An attack results file is a results file (``certifier.results``) whose header says
``"mode": "attack"`` and records the attack's settings under ``"attack"``, and whose records
(``"type": "attack"``) hold, for one input:

- ``prediction``: the smoothed classifier's prediction at the input itself, decided by
  certify's engine on fresh samples (null: it abstained), and ``correct``;
- ``smoothed``: one outcome per radius of the grid, smallest first: ``held`` (the point the
  attack found within the radius was confirmed, on fresh samples, as the same class),
  ``flipped`` (confirmed as another class), ``abstained`` (the engine would not decide
  there), or ``implied`` (not attacked: a point found within a smaller radius already moved
  the prediction, and it lies within this radius too), with the point's ``distance`` (and
  ``parameter`` for a semantic transform, ``shift`` for a translation); empty when there was
  nothing to attack (an abstention, or a wrong prediction);
- ``bare``: the same for the bare model (the method's base classifier on the view without
  noise; its prediction is exact, so only ``held``, ``flipped`` and ``implied``);
- ``certified``: the certificate of the input in the certify results file given to the
  attack (its prediction and radius), and ``alarm`` when an attack flipped that prediction
  below that radius and a second, independent confirmation agreed (a soundness alarm).

Empirical robust accuracy at radius r: the share of labeled inputs whose smoothed prediction
is right and held at every radius of the grid up to r. An outcome only counts against the
classifier when the engine confirmed it, so it is an upper bound on the true robust accuracy,
as certified accuracy is a lower bound.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Sequence

from .header import HEADER_KEYS, IDENTITY, IDENTITY_KEYS
from .errors import CertifyError
from .results import is_index, is_number, load_any_results, read_results

MODE = "attack"
RECORD_TYPE = "attack"
HELD, FLIPPED, ABSTAINED, IMPLIED = "held", "flipped", "abstained", "implied"
OUTCOMES = (HELD, FLIPPED, ABSTAINED, IMPLIED)
#: Identity keys that describe how a run samples, not which smoothed classifier and inputs it has.
_SAMPLING_KEYS = ("mode", "n0", "n", "alpha", "seed", "batch_size", "sampling", "sampling_settings", "noise_stream",
                  "attack")
#: What identifies the smoothed classifier (and the inputs) a certify run and an attack share: every
#: other identity key of the header table, so a key added there (a denoiser's schedule) counts here.
SAME_CLASSIFIER = tuple(key for key, kind in HEADER_KEYS.items() if kind == IDENTITY and key not in _SAMPLING_KEYS)
#: The keys a summary of an attack adds beside certify's.
ATTACK_KEYS = ("empirical_accuracy", "bare_empirical_accuracy", "empirical_fraction", "soundness_alarms",
               "alarm_indices", "alarms_checked", "alarm_bound", "alarm_p_value", "abstained_below_certified", "attack",
               "attack_seconds_per_input", "attack_forward_passes_per_input")


def is_attack(header: dict | None) -> bool:
    return bool(header) and header.get("mode") == MODE


def read_attack_results(path) -> tuple[dict, list[dict]]:
    """Header and records of an attack results file (``certifier.results.read_results`` for them)."""
    header, records = read_results(path, RECORD_TYPE, record_problem)
    problem = header_problem(header)
    if problem:
        raise CertifyError(f"{path}, line 1: {problem}; is this a certify attack results file?")
    return header, records


def header_problem(header: dict) -> str | None:
    """What is wrong with the ``attack`` settings of an attack header that summaries read, or None."""
    settings = header.get("attack")
    if not isinstance(settings, dict):
        return "attack is not a JSON object"
    radii = settings.get("radii")
    if not (isinstance(radii, list) and all(is_number(r) and math.isfinite(r) and r >= 0 for r in radii)):
        return f"attack radii {json.dumps(radii)[:60]} is not a list of non-negative numbers"
    alpha = settings.get("certified_alpha")
    if alpha is not None and not (is_number(alpha) and 0 <= alpha < 1):
        return f"attack certified_alpha {json.dumps(alpha)[:40]} is not a probability"
    return None


def load_report_file(path) -> tuple[dict, list[dict]]:
    """A results file of certify (JSON lines or Cohen's TSV) or of certify attack, as ``certify report`` reads it."""
    header, records = load_any_results(path)
    return read_attack_results(path) if is_attack(header) else (header, records)


def _class_or_null(value) -> bool:
    return value is None or is_index(value)


def _outcomes_problem(outcomes, where: str, allowed: Sequence[str]) -> str | None:
    if not isinstance(outcomes, list):
        return f"{where} is not a list of outcomes"
    last = -math.inf
    for outcome in outcomes:
        if not isinstance(outcome, dict):
            return f"{where} holds {json.dumps(outcome)[:40]}, not an outcome (a JSON object)"
        radius = outcome.get("radius")
        if not (is_number(radius) and math.isfinite(radius) and radius > last):
            return f"{where}: radius {json.dumps(radius)[:40]} is not a number above the one before"
        last = radius
        if outcome.get("outcome") not in allowed:
            return f"{where}: outcome {json.dumps(outcome.get('outcome'))[:40]} is none of {', '.join(allowed)}"
        if not _class_or_null(outcome.get("prediction")):
            return f"{where}: prediction {json.dumps(outcome.get('prediction'))[:40]} is not a class number or null"
    return None


def record_problem(record) -> str | None:
    """What makes an attack record malformed, or None."""
    if not isinstance(record, dict):
        return "not an attack record (expected a JSON object)"
    for key in ("index", "label", "prediction", "correct", "smoothed"):
        if key not in record:
            return f"the attack record has no {key!r}"
    if not is_index(record["index"]):
        return f"index {json.dumps(record['index'])[:40]} is not a non-negative integer"
    for key in ("label", "prediction"):
        if not _class_or_null(record[key]):
            return f"{key} {json.dumps(record[key])[:40]} is not a class number (a non-negative integer) or null"
    if record["correct"] not in (True, False, None):
        return f"correct {json.dumps(record['correct'])[:40]} is not true, false or null"
    problem = _outcomes_problem(record["smoothed"], "smoothed", OUTCOMES)
    if problem:
        return problem
    bare = record.get("bare")
    if bare is not None:
        if not isinstance(bare, dict) or not _class_or_null(bare.get("prediction")):
            return "bare is not an object with a prediction (a class number or null)"
        problem = _outcomes_problem(bare.get("outcomes"), "bare outcomes", (HELD, FLIPPED, IMPLIED))
        if problem:
            return problem
    for key in ("seconds", "forward_passes"):
        value = record.get(key)
        if value is not None and not (is_number(value) and math.isfinite(value) and value >= 0):
            return f"{key} {json.dumps(value)[:40]} is not a non-negative number"
    for key in ("certified", "alarm"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"{key} is not a JSON object"
    return None


def header_fingerprint(header: dict) -> str:
    """The SHA-256 of a certify results header's identity (what its records depend on): it stays
    the same while the run adds records, so an attack resumes beside a certify run still going."""
    identity = {key: header.get(key) for key in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def classifier_difference(certify: dict, attack: dict) -> str | None:
    """The first setting in which a certify header and an attack header describe different
    smoothed classifiers or inputs ("model_sha256 ab12... there, cd34... here"), or None."""
    for key in SAME_CLASSIFIER:
        if certify.get(key) != attack.get(key):
            return f"{key} {json.dumps(certify.get(key))[:60]} there, {json.dumps(attack.get(key))[:60]} here"
    return None


# -- summaries -----------------------------------------------------------------------------


def _grid(header: dict) -> list[float]:
    radii = ((header.get("attack") or {}).get("radii")) or []
    return sorted({0.0, *(float(r) for r in radii if is_number(r) and math.isfinite(r) and r >= 0)})


def robust_at(outcomes: list[dict], radius: float) -> bool:
    """Whether every outcome up to ``radius`` held (and the outcomes reach it)."""
    reached = [o for o in outcomes if o["radius"] <= radius]
    return radius == 0 or (bool(reached) and reached[-1]["radius"] == radius
                           and all(o["outcome"] == HELD for o in reached))


def summarize_attack(header: dict, records: Sequence[dict]) -> dict[str, Any]:
    """Empirical robust accuracy of the smoothed classifier (and of the bare model) at each radius
    of the attack's grid, soundness alarms, and what ``certify report``'s table needs besides."""
    header = header or {}
    settings = header.get("attack") or {}
    grid = _grid(header)
    by_index: dict[int, dict] = {}
    duplicates = 0
    for record in records:
        duplicates += record["index"] in by_index
        by_index[record["index"]] = record
    counted = list(by_index.values())
    labeled = [r for r in counted if r["label"] is not None]

    def share(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    def accuracy(rows: Sequence[dict], radius: float, bare: bool) -> int:
        good = 0
        for record in rows:
            source = record.get("bare") if bare else record
            if source is None:
                continue
            prediction = source["prediction"]
            right = prediction is not None and (record["label"] is None or prediction == record["label"])
            outcomes = source.get("outcomes", []) if bare else source["smoothed"]
            good += right and robust_at(outcomes, radius)
        return good

    checked = [r for r in counted if (r.get("certified") or {}).get("prediction") is not None
               and is_number((r.get("certified") or {}).get("radius")) and r["certified"]["radius"] > 0]
    alarms = [r["index"] for r in counted if r.get("alarm")]
    # an exact method records no alpha: its certificates and confirmations are never wrong by chance
    alphas = [a if is_number(a) else 0.0 for a in (settings.get("certified_alpha"), header.get("alpha"))]
    bound = min(1.0, sum(alphas)) if settings.get("certified") else None
    seconds, passes = _mean(r.get("seconds") for r in counted), _mean(r.get("forward_passes") for r in counted)
    summary: dict[str, Any] = {
        "plugin": header.get("plugin"),
        "norm": header.get("norm"),
        "threat_model": header.get("threat_model"),
        "sigma": (header.get("settings") or {}).get("sigma"),
        "denoiser": header.get("denoiser") and str(header["denoiser"]).rsplit("/", 1)[-1],
        "inputs": len(counted),
        "labeled": len(labeled),
        "abstain_rate": share(sum(r["prediction"] is None for r in counted), len(counted)),
        "seconds_per_input": seconds,
        "forward_passes_per_input": passes,
        "attack_seconds_per_input": seconds,
        "attack_forward_passes_per_input": passes,
        "radius_ceiling": None,
        "problems": {"duplicate_index": duplicates} if duplicates else {},
        "attack": {key: settings.get(key) for key in ("radii", "steps", "noise_samples", "gradient", "bare")},
        "soundness_alarms": len(alarms),
        "alarm_indices": alarms,
        "alarms_checked": len(checked),
        # under sound certificates an input raises an alarm with probability at most this
        "alarm_bound": bound,
        "alarm_p_value": alarm_p_value(len(alarms), len(checked), bound),
        "abstained_below_certified": sum(_abstained_below(r) for r in checked),
    }
    if alarms:
        summary["problems"]["soundness_alarm"] = len(alarms)
    if labeled:
        summary["empirical_accuracy"] = {str(r): accuracy(labeled, r, False) / len(labeled) for r in grid}
        if settings.get("bare"):
            summary["bare_empirical_accuracy"] = {str(r): accuracy(labeled, r, True) / len(labeled) for r in grid}
    if len(labeled) < len(counted):
        unlabeled = [r for r in counted if r["label"] is None]
        summary["empirical_fraction"] = {str(r): accuracy(unlabeled, r, False) / len(unlabeled) for r in grid}
    return summary


def alarm_p_value(alarms: int, checked: int, bound: float | None) -> float | None:
    """The largest probability that sound certificates raise at least ``alarms`` alarms among
    ``checked`` inputs, each with probability at most ``bound`` (a binomial tail; 0 for
    certificates that are never wrong by chance). None when there is no alarm to weigh."""
    if not alarms or bound is None:
        return None
    from scipy.stats import binom

    return float(binom.sf(alarms - 1, max(checked, alarms), bound))


def _abstained_below(record: dict) -> bool:
    certified = record["certified"]["radius"]
    return any(o["outcome"] == ABSTAINED and is_number(o.get("distance")) and o["distance"] < certified
               for o in record["smoothed"])


def _mean(values) -> float | None:
    numbers = [v for v in values if is_number(v)]
    return sum(numbers) / len(numbers) if numbers else None


def with_attack(summary: dict, attack_summary: dict, attack_name: str) -> dict:
    """A certify summary with the attack of the same inputs beside it (``certify report``)."""
    merged = {**summary, **{key: attack_summary[key] for key in ATTACK_KEYS if key in attack_summary}}
    merged["attack_file"] = attack_name
    if attack_summary.get("soundness_alarms"):
        merged["problems"] = {**(summary.get("problems") or {}), "soundness_alarm": attack_summary["soundness_alarms"]}
    return merged


def pair_with_certify(runs: Sequence[tuple[dict, Sequence[dict]]]) -> dict[int, int]:
    """For each attack run among ``runs`` (header, records), the certify run of the same smoothed
    classifier and inputs it is shown beside (by position), when exactly one such run is there
    (the one whose records it checked, when it recorded that)."""
    pairs: dict[int, int] = {}
    for number, (header, _) in enumerate(runs):
        if not is_attack(header):
            continue
        candidates = [other for other, (theirs, _) in enumerate(runs)
                      if not is_attack(theirs) and (theirs or {}).get("mode", "certify") == "certify"
                      and other not in pairs.values() and classifier_difference(theirs, header) is None]
        recorded = (header.get("attack") or {}).get("certified")
        if recorded and len(candidates) > 1:
            candidates = [c for c in candidates if header_fingerprint(runs[c][0]) == recorded] or candidates
        if len(candidates) == 1:
            pairs[number] = candidates[0]
    return pairs
