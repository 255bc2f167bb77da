"""What results say: records checked before they are counted, certified accuracy, ACR and the
rest of ``certify report``'s table, and its plot."""

from __future__ import annotations

import collections
import math
import os
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence

from .errors import CertifyError
from .results import is_index, is_number
from .stats import show_number
from .threats import DEFAULT_RADII, STANDARD, ThreatModel, exact_text
#: A radius this close above the recorded ceiling is float noise between versions, not a claim.
CEILING_SLACK = 1e-12

#: How a warning names each problem a summary found: (one, many, what the summary did about it).
NOTHING = "counted as certifying nothing"
PROBLEMS = {
    "radius_above_ceiling": ("radius above the recorded ceiling {ceiling}", "radii above the recorded ceiling {ceiling}",
                             NOTHING),
    "negative_or_non_finite_radius": ("negative or non-finite radius", "negative or non-finite radii", NOTHING),
    "invalid_index": ("index that is not a non-negative integer", "indices that are not non-negative integers",
                      NOTHING),
    "duplicate_index": ("repeated index", "repeated indices", "each input counted once"),
    "conflicting_duplicates": ("input written more than once with different results",
                               "inputs written more than once with different results", NOTHING),
    "abstain_with_radius": ("abstain with a non-zero radius", "abstains with a non-zero radius", "counted as radius 0"),
    "correct_disagrees": ("'correct' that disagrees with its label and prediction",
                          "'correct' values that disagree with their label and prediction", "recomputed"),
    "non_finite_ceiling": ("non-finite radius ceiling in the header", "non-finite radius ceilings in the header",
                           "radii not checked against it"),
    "exact_header_of_sampled_run": ("header claiming exact certificates for a run that sampled its views",
                                    "headers claiming exact certificates for runs that sampled their views",
                                    "every input counted as certifying nothing"),
    "exact_record_of_sampled_run": ("record claiming an exact certificate in a run that sampled its views",
                                    "records claiming exact certificates in a run that sampled its views", NOTHING),
    "radius_not_a_level": ("sequential radius that is none of the run's levels",
                           "sequential radii that are none of the run's levels", NOTHING),
    "passes_over_budget": ("record with more forward passes than the run's budget of {budget}",
                           "records with more forward passes than the run's budget of {budget}", NOTHING),
    # certify attack (certifier.attack_results): a point within the certified radius that the engine
    # confirmed twice, on fresh samples, as another class
    "soundness_alarm": ("SOUNDNESS ALARM: a certificate an attack broke",
                        "SOUNDNESS ALARMS: certificates an attack broke",
                        "confirmed twice below the certified radius; alarm_p_value is how likely sound "
                        "certificates raise that many: small, check the plugin's certificate rule"),
}


@dataclass(frozen=True)
class _Limits:
    """What the header says a record can be: None where it says nothing (or nothing readable)."""

    ceiling: float | None = None
    #: a sequential run's levels: its radii are these or 0
    levels: frozenset | None = None
    #: forward passes per input
    budget: int | None = None
    #: whether the run drew its views at random (its certificates cannot be exact)
    sampled: bool = False


def _limits(header: dict, problems: collections.Counter) -> _Limits:
    ceiling = header.get("radius_ceiling")
    if ceiling is not None and not (is_number(ceiling) and math.isfinite(ceiling)):
        problems["non_finite_ceiling"] += 1
        ceiling = None
    levels = recorded_levels(header)
    return _Limits(ceiling, frozenset(levels) | {0.0} if levels else None, passes_budget(header),
                   sampled_views(header))


def sampled_views(header: dict | None) -> bool:
    """Whether the run a header describes drew its views at random (fixed or sequential sampling;
    files written before ``sampling`` was recorded: whenever they record an alpha)."""
    header = header or {}
    sampling = header.get("sampling")
    return sampling in ("fixed", "sequential") or (sampling is None and header.get("alpha") is not None)


def passes_budget(header: dict | None) -> int | None:
    """The most forward passes the run a header describes makes per input: n0 + n views (every
    view of an exact method), for each of the method's vote groups; None when the header does
    not say, or the method is not installed (its vote groups are unknown)."""
    header = header or {}
    if sampled_views(header):
        views = [header.get("n0") or 0, header.get("n")]
    elif header.get("sampling") == "enumeration":
        views = [(header.get("settings") or {}).get("views")]
    else:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in views):
        return None
    groups = _vote_groups(header.get("plugin"))
    return sum(views) * groups if groups else None


def _vote_groups(plugin) -> int | None:
    """How many vote groups an installed method has (None: not installed, or its plugin fails)."""
    from .plugins import find_method

    method = find_method(plugin) if isinstance(plugin, str) else None
    groups = getattr(method, "groups", None)
    return len(groups) if isinstance(groups, tuple) and groups else None


def audit(records: Sequence[dict], header: dict | None = None) -> tuple[list[dict], dict[str, int]]:
    """The records a summary counts, one per input, and how many of each problem were found.

    A radius the method cannot produce with the recorded settings (above the
    header's ceiling, negative, not finite) means the record was not made by this
    run as recorded: nothing in it is trusted. Such an input still counts (dropping
    it would raise every rate) but certifies nothing: radius 0, not correct. The same
    goes for a record whose index names no input, and for an input written twice
    with different results. An input written twice alike counts once. ``correct`` is
    recomputed from label and prediction, never taken on trust.
    """
    header = header or {}
    problems: collections.Counter = collections.Counter()
    limits = _limits(header, problems)
    if header.get("exact") and limits.sampled:
        # certify records exact only for methods that draw no views: this header was edited
        problems["exact_header_of_sampled_run"] += 1
        return [_certifies_nothing(r) for r in _one_per_input(records)], dict(problems)
    by_index: dict[int, list[dict]] = {}
    counted = []
    for record in records:
        if is_index(record.get("index")):
            by_index.setdefault(record["index"], []).append(record)
        else:
            problems["invalid_index"] += 1
            counted.append(_certifies_nothing(record))
    for group in by_index.values():
        record = group[-1]
        if len(group) > 1:
            problems["duplicate_index"] += len(group) - 1
            claims = {(r.get("label"), r.get("prediction"), repr(float(r["radius"]))) for r in group}
            if len(claims) > 1:
                problems["conflicting_duplicates"] += 1
                counted.append(_certifies_nothing(record))
                continue
        counted.append(_checked(record, limits, problems))
    return counted, dict(problems)


def _one_per_input(records: Sequence[dict]) -> list[dict]:
    """The last record of each input (and every record whose index names none)."""
    by_index = {r["index"]: r for r in records if is_index(r.get("index"))}
    return list(by_index.values()) + [r for r in records if not is_index(r.get("index"))]


def _certifies_nothing(record: dict) -> dict:
    label = record.get("label")
    return {"label": label, "prediction": record.get("prediction"), "radius": 0.0,
            "correct": None if label is None else False, "valid": False, "source": record}


def _checked(record: dict, limits: _Limits, problems: collections.Counter) -> dict:
    label, prediction, radius = record.get("label"), record.get("prediction"), float(record["radius"])
    passes = record.get("forward_passes")
    impossible = [
        ("negative_or_non_finite_radius", not (math.isfinite(radius) and radius >= 0)),
        ("radius_above_ceiling", limits.ceiling is not None and radius > limits.ceiling * (1 + CEILING_SLACK)),
        ("radius_not_a_level", limits.levels is not None and radius not in limits.levels),
        ("passes_over_budget", limits.budget is not None and is_number(passes) and passes > limits.budget),
        ("exact_record_of_sampled_run", limits.sampled and record.get("exact") is True),
    ]
    for problem, found in impossible:
        if found:
            problems[problem] += 1
            return _certifies_nothing(record)
    if prediction is None and radius != 0:
        problems["abstain_with_radius"] += 1
        radius = 0.0
    correct = None if label is None else (prediction is not None and prediction == label)
    stated = record.get("correct")
    if correct is not None and stated is not None and bool(stated) != correct:
        problems["correct_disagrees"] += 1
    return {"label": label, "prediction": prediction, "radius": radius, "correct": correct, "valid": True,
            "source": record}


def _alarms(summary: dict) -> str:
    if "soundness_alarms" not in summary:
        return "-"
    chance = summary.get("alarm_p_value")
    odds = f", p {chance:.2g}" if is_number(chance) else ""
    return f"{summary['soundness_alarms']} ({summary.get('alarms_checked', 0)}{odds})"


def describe_problems(summary: dict) -> str | None:
    """One line naming each problem a summary found and how many, or None."""
    problems = summary.get("problems") or {}
    if not problems:
        return None
    ceiling, budget = summary.get("radius_ceiling"), summary.get("passes_budget")
    values = {"ceiling": f"{ceiling:.6g}" if is_number(ceiling) else "?", "budget": budget or "?"}
    parts = []
    for key, (one, many, consequence) in PROBLEMS.items():
        count = problems.get(key, 0)
        if count:
            parts.append(f"{count} {(one if count == 1 else many).format(**values)} ({consequence})")
    return "; ".join(parts)


def recorded_levels(header: dict | None) -> list[float]:
    """The levels of a sequential run's header (the radii its records can take besides 0), else []."""
    header = header or {}
    settings = header.get("sampling_settings")
    if header.get("sampling") != "sequential" or not isinstance(settings, dict):
        return []
    levels = settings.get("levels")
    if not isinstance(levels, list) or not all(is_number(r) and math.isfinite(r) for r in levels):
        return []
    return [float(r) for r in levels]


def describe_plan(header: dict) -> str:
    """What a sequential run (by its results header) decides, and the levels no certificate can reach at this -n."""
    levels = header["sampling_settings"]["levels"]
    ceiling = header.get("radius_ceiling")
    if len(levels) == 1:
        text = f"sequential sampling: each input is certified at radius {exact_text(levels[0])} or not"
    else:
        text = (f"sequential sampling: each radius is the largest of the levels "
                f"{', '.join(exact_text(r) for r in levels)} proved")
    text += f", with at most n = {header['n']} estimation views per input"
    above = [r for r in levels if ceiling is not None and r > ceiling]
    if above:
        text += (f"; levels above the radius ceiling {ceiling:.4g} can never be certified at this -n: "
                 f"{', '.join(exact_text(r) for r in above)}")
    return text



def radii_by_threat_model(runs: Sequence[tuple[dict, Sequence[dict]]]) -> list[list[float]]:
    """The default radii of each run's summary: its threat model's, and the levels of every
    sequential run of that threat model (so their tables line up); never another threat
    model's radii, which are in other units."""
    threats = [threat_model(header, records) for header, records in runs]
    grids: dict[str, set[float]] = {}
    for (header, _), threat in zip(runs, threats):
        grids.setdefault(threat.name, set()).update(threat.radii, recorded_levels(header))
    return [sorted(grids[threat.name]) for threat in threats]


def json_safe(value):
    """A summary as JSON has it: NaN and infinity as null (they are not JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarize_files(runs: Sequence[tuple[dict, Sequence[dict]]], radii: Iterable[float] | None = None) -> list[dict]:
    """The summaries ``certify report`` prints of results files (header, records), side by side:
    at ``radii``, or by default each threat model's radii with the levels of its sequential runs."""
    grids = radii_by_threat_model(runs)
    return [summarize(records, list(radii) if radii is not None else grid, header)
            for (header, records), grid in zip(runs, grids)]


def threat_model(header: dict | None, records: Sequence[dict] = ()) -> ThreatModel:
    """The threat model of a results file: its header's, or for files written before threat
    models were recorded, the pixel-space distance of its norm."""
    header = header or {}
    norm = header.get("norm") or (records[0].get("norm") if records else None)
    return ThreatModel.from_record(header.get("threat_model"), norm)


def summarize(records: Sequence[dict], radii: Iterable[float] | None = None, header: dict | None = None) -> dict:
    """Certified accuracy at each radius and ACR (labeled inputs); certified fraction, radius
    statistics and predicted classes (all inputs); abstain rate, cost per input, problems found.
    ``radii`` default to the threat model's (for L1, L2, Linf: DEFAULT_RADII)."""
    header = header or {}
    threat = threat_model(header, records)
    radii = list(radii) if radii is not None else list(threat.radii)
    counted, problems = audit(records, header)
    count = len(counted)
    labeled = [r for r in counted if r["label"] is not None]
    certified = [r for r in counted if r["valid"] and r["prediction"] is not None]
    abstained = sum(1 for r in counted if r["prediction"] is None)
    timed = [r["source"]["seconds"] for r in counted if is_number(r["source"].get("seconds"))]
    passes = [r["source"]["forward_passes"] for r in counted if is_number(r["source"].get("forward_passes"))]
    classes = collections.Counter(r["prediction"] for r in certified)

    def share(part: int | float, whole: int) -> float | None:
        return part / whole if whole else None

    summary: dict[str, Any] = {
        "plugin": header.get("plugin"),
        "norm": header.get("norm") or (records[0].get("norm") if records else None),
        "threat_model": threat.as_dict(),
        "sigma": (header.get("settings") or {}).get("sigma"),
        "options": _options(header),
        "denoiser": _denoiser_name(header),
        **_diffusion_step(header),
        "inputs": count,
        "labeled": len(labeled),
        "abstain_rate": share(abstained, count),
        "seconds_per_input": share(sum(timed), len(timed)),
        "forward_passes_per_input": share(sum(passes), len(passes)),
        "sampling": header.get("sampling"),
        "budget": header.get("n"),
        "levels": recorded_levels(header) or None,
        "radius_ceiling": header.get("radius_ceiling"),
        "passes_budget": passes_budget(header),
        "exact": bool(header.get("exact", False)) and "exact_header_of_sampled_run" not in problems,
        "conditional": sorted({r["conditional"] for r in records if r.get("conditional")}),
        # About the smoothed prediction, right or wrong: what there is to say without labels.
        "certified_fraction": {str(r): share(sum(1 for x in certified if x["radius"] >= r), count) for r in radii},
        "mean_radius": share(sum(r["radius"] for r in certified), count),
        "median_radius": statistics.median(r["radius"] if r["valid"] else 0.0 for r in counted) if count else None,
        "predicted_classes": {str(c): n for c, n in sorted(classes.items())},
        "problems": problems,
    }
    if threat.display == "factor":
        summary["factor_ranges"] = {str(r): list(threat.factor_range(r)) for r in radii}
    if labeled:
        good = [r for r in labeled if r["correct"] and r["valid"]]
        summary["certified_accuracy"] = {str(r): sum(1 for x in good if x["radius"] >= r) / len(labeled) for r in radii}
        summary["acr"] = sum(r["radius"] for r in good) / len(labeled)
        summary["accuracy"] = len(good) / len(labeled)
    return summary


def _options(header: dict) -> dict[str, Any]:
    """The plugin's options as the results header records them (``-o NAME VALUE``)."""
    settings = header.get("settings")
    options = settings.get("options") if isinstance(settings, dict) else None
    return dict(options) if isinstance(options, dict) else {}


def _diffusion_step(header: dict) -> dict[str, Any]:
    """How a diffusion noise predictor denoised the run (nothing for other runs): its kind, schedule,
    timestep t* and alpha_bar(t*)."""
    if header.get("denoiser_kind") != "diffusion":
        return {}
    schedule = header.get("schedule") or {}
    shown = f"{schedule.get('kind')} ({schedule.get('steps')} steps)" if isinstance(schedule, dict) else str(schedule)
    return {"denoiser_kind": "diffusion", "schedule": shown, "timestep": header.get("timestep"),
            "alpha_bar": header.get("alpha_bar")}


def _denoiser_name(header: dict) -> str | None:
    """The file name of the denoiser a run used (None: none)."""
    path = header.get("denoiser")
    if not path:
        return None
    return os.path.basename(str(path)) or str(path)


def prediction_summary(records: Sequence[dict]) -> dict:
    """What PREDICT answered: inputs, abstentions, and the accuracy on labeled inputs (None without labels)."""
    labeled = [r for r in records if r["label"] is not None]
    return {
        "inputs": len(records),
        "abstained": sum(r["prediction"] is None for r in records),
        "labeled": len(labeled),
        "accuracy": sum(bool(r["correct"]) for r in labeled) / len(labeled) if labeled else None,
    }


def format_summary(summaries: Sequence[dict], names: Sequence[str]) -> str:
    """A side-by-side table of one or more summaries, one table per threat model.

    Runs certified against different threat models (an L2 distance, a brightness shift)
    are not comparable: each threat model gets its own table under a line naming it,
    with radii in its units. Runs of one pixel-norm threat model get one table as always.
    Certified accuracy and ACR need labels: a run without them shows "-" there,
    and the table adds rows about its predictions instead (certified fraction,
    radius statistics, predicted classes), never an accuracy.
    """
    threats = [threat_model(s) for s in summaries]
    groups: dict[str, list[int]] = {}
    for number, threat in enumerate(threats):
        groups.setdefault(threat.name, []).append(number)
    if len(groups) == 1 and STANDARD.get(threats[0].name) == threats[0]:
        return _table(summaries, names, threats[0])
    parts = []
    for members in groups.values():
        threat = threats[members[0]]
        parts.append(threat.heading() + "\n"
                     + _table([summaries[i] for i in members], [names[i] for i in members], threat))
    return "\n\n".join(parts)


class Row(NamedTuple):
    """One row of a summary table: its label, one value per run, and what it shows for
    machines (``key`` a summary key such as "acr", ``radius`` the radius of a per-radius key)."""

    label: str
    values: list[str]
    key: str | None = None
    radius: str | None = None


#: Per-radius values a summary may hold, labeled accuracies first, and how a table names them.
#: ``empirical_accuracy`` is what an attack measured: the share of inputs no attack within the
#: radius moved (an upper bound beside the certified lower bound).
RADIUS_SERIES = (("certified_accuracy", "certified accuracy"), ("empirical_accuracy", "empirical robust accuracy"),
                 ("bare_empirical_accuracy", "bare model's empirical accuracy"),
                 ("empirical_fraction", "empirically robust fraction (no labels)"))


def percent(value) -> str:
    """A share as a table shows it: ``42.5%``; ``-`` when there is none."""
    return "-" if not is_number(value) or math.isnan(value) else f"{100 * value:.1f}%"


def summary_rows(summaries: Sequence[dict], threat: ThreatModel) -> tuple[list[Row], list[str]]:
    """The rows of a side-by-side table of summaries of one threat model, and the notes under it
    (what a sequential, exact or conditional run's radii mean)."""
    rows: list[Row] = []

    def row(label: str, values: Sequence[str], key: str | None = None, radius: str | None = None) -> None:
        rows.append(Row(label, list(values), key, radius))

    def number(value, digits: int = 4) -> str:
        return show_number(value, digits) if is_number(value) else "-"

    def shown(value) -> str:
        """A radius in the threat model's units (a factor range, pixels); a plain number for distances."""
        return number(value) if threat.display == "distance" or not is_number(value) else threat.show(value)

    def radius_keys(key: str) -> list[str]:
        keys = []
        for s in summaries:
            for radius in s.get(key) or {}:
                if radius not in keys:
                    keys.append(radius)
        return sorted(keys, key=float)

    row("plugin", [str(s.get("plugin")) for s in summaries], "plugin")
    row("norm", [str(s.get("norm")) for s in summaries], "norm")
    row("sigma", [str(s.get("sigma")) for s in summaries], "sigma")
    for name in dict.fromkeys(name for s in summaries for name in s.get("options") or {}):
        row(f"-o {name.replace('_', '-')}", [_option_value(s, name) for s in summaries], "options")
    if any(s.get("denoiser") for s in summaries):
        row("denoiser", [s.get("denoiser") or "none" for s in summaries], "denoiser")
    if any(s.get("denoiser_kind") for s in summaries):
        row("denoiser kind", [s.get("denoiser_kind") or ("gaussian" if s.get("denoiser") else "-") for s in summaries],
            "denoiser_kind")
        row("schedule", [s.get("schedule") or "-" for s in summaries], "schedule")
        row("timestep", [f"{s['timestep']:g}" if is_number(s.get("timestep")) else "-" for s in summaries],
            "timestep")
        row("alpha_bar", [f"{s['alpha_bar']:.6g}" if is_number(s.get("alpha_bar")) else "-" for s in summaries],
            "alpha_bar")
    sequential = [s.get("sampling") == "sequential" for s in summaries]
    if any(sequential):
        row("sampling", [str(s.get("sampling") or "-") for s in summaries], "sampling")
    row("inputs (labeled)", [f"{s['inputs']} ({s['labeled']})" for s in summaries], "inputs")
    for series, name in RADIUS_SERIES:
        if any(series in s for s in summaries):
            for key in radius_keys(series):
                row(f"{name} {threat.certified_set(key)}", [percent((s.get(series) or {}).get(key)) for s in summaries],
                    series, key)
    if any("certified_accuracy" in s for s in summaries):
        row("ACR", [number(s.get("acr")) if "acr" in s else "-" for s in summaries], "acr")
    if any("soundness_alarms" in s for s in summaries):
        row("soundness alarms (inputs checked)", [_alarms(s) for s in summaries], "soundness_alarms")
    unlabeled = any(s["inputs"] > s["labeled"] for s in summaries)
    if unlabeled:
        for key in radius_keys("certified_fraction"):
            row(f"certified fraction {threat.certified_set(key)}",
                [percent((s.get("certified_fraction") or {}).get(key)) for s in summaries], "certified_fraction", key)
        row("mean radius (abstain 0)", [number(s.get("mean_radius")) for s in summaries], "mean_radius")
        row("median radius (abstain 0)", [number(s.get("median_radius")) for s in summaries], "median_radius")
        row("classes predicted", [str(len(s.get("predicted_classes") or {})) for s in summaries], "predicted_classes")
        row("most predicted class", [_most_predicted(s) for s in summaries])
    row("abstain rate", [percent(s["abstain_rate"]) for s in summaries], "abstain_rate")
    row("radius ceiling", [shown(s.get("radius_ceiling")) for s in summaries], "radius_ceiling")
    row("seconds per input", [number(s.get("seconds_per_input"), 3) for s in summaries], "seconds_per_input")
    row("forward passes per input", [
        "-" if s.get("forward_passes_per_input") is None else f"{s['forward_passes_per_input']:.0f}" for s in summaries
    ], "forward_passes_per_input")
    if any("attack_file" in s for s in summaries):  # an attack beside the certificates: its cost too
        row("attack: seconds per input", [number(s.get("attack_seconds_per_input"), 3) if "attack_file" in s else "-"
                                          for s in summaries], "attack_seconds_per_input")
        row("attack: forward passes per input", [
            f"{s['attack_forward_passes_per_input']:.0f}" if is_number(s.get("attack_forward_passes_per_input"))
            and "attack_file" in s else "-" for s in summaries], "attack_forward_passes_per_input")
    notes = []
    if unlabeled:
        notes.append("certified fraction: inputs whose smoothed prediction, right or wrong, is certified at radius r "
                     "(no labels: not an accuracy)")
    return rows, notes


def _option_value(summary: dict, name: str) -> str:
    options = summary.get("options") or {}
    if name not in options:
        return "-"
    return str(options[name])  # as the sigma row: the value the run used, whole


def run_notes(summary: dict) -> list[str]:
    """What a run's radii mean beyond the table: a sequential run's levels, exact or conditional certificates."""
    notes = []
    if summary.get("sampling") == "sequential" and summary.get("levels"):
        levels = ", ".join(exact_text(r) for r in summary["levels"])
        notes.append(f"sequential, at most n = {summary.get('budget')} views per input: each radius is the largest "
                     f"level proved of {levels} (0 below the lowest)")
    if summary.get("exact"):
        notes.append("certificates are exact (no sampling, no alpha)")
    if summary.get("conditional"):
        notes.append(f"radii are CONDITIONAL on: {', '.join(summary['conditional'])}")
    return notes


def _table(summaries: Sequence[dict], names: Sequence[str], threat: ThreatModel) -> str:
    rows, notes = summary_rows(summaries, threat)
    label_width = max(30, *(len(r.label) + 2 for r in rows))
    width = max(12, *(len(n) for n in names), *(len(v) for r in rows for v in r.values)) + 2
    lines = ["".ljust(label_width) + "".join(n.rjust(width) for n in names)]
    lines += [r.label.ljust(label_width) + "".join(v.rjust(width) for v in r.values) for r in rows]
    lines += notes
    lines += [f"{name}: {note}" for s, name in zip(summaries, names) for note in run_notes(s)]
    return "\n".join(lines)


def _most_predicted(summary: dict) -> str:
    classes = summary.get("predicted_classes") or {}
    if not classes or not summary["inputs"]:
        return "-"
    top = max(classes, key=lambda c: (classes[c], -int(c)))
    return f"{top} ({100 * classes[top] / summary['inputs']:.1f}%)"


def plot_summaries(runs: Sequence[tuple[str, dict, list[dict]]], path: str | os.PathLike,
                   summaries: Sequence[dict] | None = None) -> None:
    """Certified accuracy against radius, one curve per run (certified fraction for a run without labels),
    one panel per threat model, its radius in its units; where a run's summary holds an attack's
    empirical robust accuracy (``summaries``, one per run), that too, dashed, at the attack's radii."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CertifyError("--plot needs matplotlib: pip install 'onnx-certifier[plot]'") from None
    summaries = list(summaries) if summaries is not None else [{} for _ in runs]
    panels: dict[str, list[tuple[tuple[str, dict, list[dict]], dict]]] = {}
    threats: dict[str, ThreatModel] = {}
    for run, summary in zip(runs, summaries):
        name, header, records = run
        threat = threat_model(header, records)
        threats.setdefault(threat.name, threat)
        panels.setdefault(threat.name, []).append((run, summary))
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure, all_axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for axes in all_axes.flat[len(panels):]:
        axes.axis("off")
    for axes, (threat_name, members) in zip(all_axes.flat, panels.items()):
        _plot_panel(axes, members, threats[threat_name], titled=len(panels) > 1
                    or STANDARD.get(threat_name) != threats[threat_name])
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=120)
    except OSError as error:
        raise CertifyError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        plt.close(figure)


def _plot_panel(axes, runs: Sequence[tuple[tuple[str, dict, list[dict]], dict]], threat: ThreatModel,
                titled: bool) -> None:
    any_labeled = any_unlabeled = attacked = False
    for (name, header, records), summary in runs:
        empirical = summary.get("empirical_accuracy") or {}
        if empirical:
            attacked = True
            points = sorted((float(r), v) for r, v in empirical.items() if is_number(v))
            line = axes.plot([r for r, _ in points], [v for _, v in points], linestyle="--", marker="o",
                             markersize=3, label=f"{name} (attack: empirical robust accuracy)")
        if header.get("mode") == "attack":
            continue  # an attack alone: no certificates to draw
        counted, _ = audit(records, header)
        labeled = [r for r in counted if r["label"] is not None]
        if labeled:
            any_labeled = True
            counted, good = labeled, [r for r in labeled if r["correct"] and r["valid"]]
        else:
            any_unlabeled = True
            good = [r for r in counted if r["valid"] and r["prediction"] is not None]
            name += " (no labels: certified fraction)"
        if not counted:
            continue
        radii = sorted({0.0} | {r["radius"] for r in good})
        top = max(radii) * 1.05 + 1e-9
        grid = [i * top / 400 for i in range(401)]
        values = [sum(1 for r in good if r["radius"] >= g) / len(counted) for g in grid]
        axes.plot(grid, values, label=name, drawstyle="steps-post",
                  **({"color": line[0].get_color()} if empirical else {}))
    if STANDARD.get(threat.name) == threat:
        axes.set_xlabel("radius")
    elif threat.display == "factor":
        axes.set_xlabel(f"radius r: {threat.parameter} in [e^-r, e^r]")
    else:
        axes.set_xlabel(f"radius: {threat.parameter} ({threat.unit})")
    if titled:
        axes.set_title(f"{threat.name}: {threat.description}", fontsize=8)
    axes.set_ylabel(
        "accuracy (certified, empirical)" if attacked
        else "certified accuracy / certified fraction" if any_labeled and any_unlabeled
        else "certified fraction" if any_unlabeled else "certified accuracy"
    )
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=7 if attacked else None)
