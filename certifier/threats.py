"""Threat models: what a certificate protects against, in which units, and how a radius is shown.

A smoothing method certifies a radius r in some parameter of the attacker's change: an
L2 distance in pixel space (rs), a brightness shift, a contrast factor, a cyclic shift.
Its :class:`ThreatModel` says which, so results files, summaries and ``certify plugins``
state a radius in its own units instead of calling every radius a norm.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from .stats import show_number

#: Radii of the summary table unless others are asked for (the pixel-norm threat models').
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
#: How a radius r reads: "distance" (every change whose parameter is below r), "factor" (every
#: factor strictly between e^-r and e^r: r bounds a log factor), "shift" (every whole-pixel
#: shift of at most floor(r) pixels on each axis).
DISPLAYS = ("distance", "factor", "shift")
#: Beyond this log factor, e^r is no float: a factor range is shown as powers of e.
LARGEST_LOG_FACTOR = math.log(sys.float_info.max)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ThreatModel:
    """What a method's radius bounds.

    ``name`` is a short identifier (``l2``, ``brightness``; results files record it as the
    ``norm`` too); ``description`` a phrase for people ("L2 distance in pixel space");
    ``parameter`` the quantity the radius bounds (``||x' - x||_2``, ``|b|``); ``unit`` its
    unit; ``display`` how a radius is shown (:data:`DISPLAYS`); ``radii`` the default
    radii of summary tables.
    """

    name: str
    description: str
    parameter: str
    unit: str
    display: str = "distance"
    radii: tuple[float, ...] = DEFAULT_RADII

    def __post_init__(self):
        problems = []
        if not (isinstance(self.name, str) and NAME.match(self.name)):
            problems.append(f"a name of letters, digits, - and _ (got {self.name!r})")
        for field in ("description", "parameter", "unit"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field).strip():
                problems.append(f"a non-empty {field}")
        if self.display not in DISPLAYS:
            problems.append(f"a display of {', '.join(DISPLAYS)} (got {self.display!r})")
        try:
            radii = tuple(float(r) for r in self.radii)
        except (TypeError, ValueError):
            radii = ()
        if not radii or not all(math.isfinite(r) and r >= 0 for r in radii):
            problems.append("default radii that are finite numbers >= 0")
        else:
            object.__setattr__(self, "radii", radii)
        if problems:
            raise ValueError("a threat model needs " + "; ".join(problems))

    # -- showing radii --------------------------------------------------------

    def factor_range(self, radius: float) -> tuple[float, float]:
        """The factors a log-radius certifies, rounded inwards: every factor in [low, high] is
        strictly between e^-r and e^r (floats: beyond float range, high is the largest float)."""
        low = math.exp(-radius)  # 0.0 when e^-r is below every float
        try:
            high = math.exp(radius)
        except OverflowError:  # e^r beyond float range: every float factor above 1 is inside
            high = sys.float_info.max
        for _ in range(2):  # exp is within an ulp: step inside by two
            low, high = math.nextafter(low, 1.0), math.nextafter(high, 1.0)
        return (low, high) if low <= high else (1.0, 1.0)

    def show(self, radius: float, digits: int = 4) -> str:
        """A radius in this threat model's terms, never claiming more than it certifies, whatever
        the number: ``0.4312``, ``[0.6498, 1.5389]`` (a factor range; ``(e^-800.0000, e^800.0000)``
        where e^r is beyond float range), ``2 px``, ``1.0000e+308``; ``-`` when it is not a finite number."""
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius):
            return "-"
        if self.display == "factor":
            if radius < LARGEST_LOG_FACTOR:
                low, high = self.factor_range(radius)
                return f"[{show_number(low, digits, up=True)}, {show_number(high, digits)}]"
            exponent = show_number(radius, digits)  # rounded down: the open range stays inside
            return f"(e^-{exponent}, e^{exponent})"
        if self.display == "shift":
            return f"{show_number(math.floor(radius), 0)} px"
        return show_number(radius, digits)

    def certified_set(self, radius: float | str) -> str:
        """What a radius of at least ``radius`` certifies, for table rows: ``r >= 0.5`` for the
        pixel norms (as always), ``|b| < 0.25``, ``factor in [0.7789, 1.2840]``, ``max(|t_x|, |t_y|) <= 2 px``."""
        if self.name in STANDARD and STANDARD[self.name] == self:
            return f"r >= {radius}"
        radius = float(radius)
        if radius == 0:  # the prediction itself, nothing more
            return f"{self.parameter} = {1 if self.display == 'factor' else 0}"
        if self.display == "factor":
            return f"{self.parameter} in {self.show(radius)}"
        if self.display == "shift":
            return f"{self.parameter} <= {self.show(radius)}"
        return f"{self.parameter} < {exact_text(radius)}"

    def heading(self) -> str:
        """One line naming the threat model, for reports."""
        reads = {
            "distance": f"radius r: every change with {self.parameter} < r, in {self.unit}",
            "factor": f"radius r: every {self.parameter} strictly between e^-r and e^r",
            "shift": f"radius r: every shift with {self.parameter} <= r, in {self.unit}",
        }[self.display]
        return f"threat model {self.name}: {self.description}; {reads}"

    # -- the space the radius lives in -------------------------------------------

    def diameter(self, input_shape: Sequence[int]) -> float | None:
        """The largest radius that can certify more than a smaller one for inputs of ``input_shape``
        in [0, 1]: beyond it every change the threat model allows is already covered. sqrt(d) for
        L2, d for L1, 1 for Linf (the farthest two points of [0, 1]^d); for whole-pixel shifts the
        larger side of the image (a cyclic shift by the side is none, and a shift that fills the
        edge has moved every pixel out by then). None when the threat model has no bound: a
        brightness shift or a log factor may be any number."""
        size = math.prod(int(d) for d in input_shape)
        if STANDARD.get(self.name) == self:
            return {"l1": float(size), "l2": math.sqrt(size), "linf": 1.0}[self.name]
        if self.display == "shift" and input_shape:
            return float(max(int(d) for d in input_shape[-2:]))
        return None

    # -- recording ------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["radii"] = list(self.radii)
        return out

    @classmethod
    def from_record(cls, value: Any, norm: Any = None) -> "ThreatModel":
        """The threat model a results header records; files written before threat models
        existed name only a norm (l1, l2, linf), and anything unreadable is shown by its name."""
        if isinstance(value, Mapping):
            fields = {k: value[k] for k in ("name", "description", "parameter", "unit", "display", "radii")
                      if k in value}
            try:
                return cls(**fields)
            except (TypeError, ValueError):
                norm = value.get("name", norm)
        name = norm if isinstance(norm, str) and norm else "?"
        if name in STANDARD:
            return STANDARD[name]
        recorded = "" if name == "?" else f" (norm {name!r})"
        return cls(name if NAME.match(name) else "unknown", f"not described in the results file{recorded}",
                   "r", "the method's units")


def exact_text(value: float) -> str:
    """A number as short as it reads back the same: ``0.25``, ``3``, ``0.1234567``, ``1e+308``."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _norm(name: str, label: str) -> ThreatModel:
    return ThreatModel(name, f"{label} distance in pixel space", f"||x' - x||_{label[1:].lower()}", "pixel units")


#: The pixel-norm threat models: a method that declares only a ``norm`` has one of these.
STANDARD: dict[str, ThreatModel] = {
    "l1": _norm("l1", "L1"),
    "l2": _norm("l2", "L2"),
    "linf": _norm("linf", "Linf"),
}
