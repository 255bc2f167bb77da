"""The one rule for sigma and a method's own noise scale.

A smoothing method declares its noise level in one of three ways
(:class:`certifier.SmoothingMethod`'s ``uses_sigma``, ``scale_option`` and ``scale_per_sigma``):

- no noise level (``uses_sigma = False``: translation): ``--sigma`` is refused, never dropped;
- sigma itself (the default: rs, brightness): ``--sigma``, else the model's recorded sigma;
- an option of its own (``scale_option = "lambda"``, ``scale_per_sigma = sqrt(3)``: uniform):
  the option's value is ``scale_per_sigma`` times sigma, the standard deviation of the noise.
  Either may be given: ``--sigma S`` sets the option to ``S * scale_per_sigma``, the option
  ``V`` makes sigma ``V / scale_per_sigma``; given both, they must agree. The method is always made with both, so its results header, ``certify train`` and
  the model's metadata record a sigma that is true of the noise.

A scale parameter of a noise family is proportional to its standard deviation, so one constant
relates it to sigma both ways.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import CertifyError, MissingNoiseScale


def scale_relation(method_class) -> str:
    """How the method's scale option and sigma relate, for messages: "lambda = 1.73205 sigma"."""
    return f"{option_name(method_class.scale_option)} = {method_class.scale_per_sigma:.6g} sigma"


def scale_kind(method_class) -> str:
    """One line for ``certify plugins``: which setting is the method's noise scale."""
    if not method_class.uses_sigma:
        return "no noise scale: --sigma does not apply"
    if method_class.scale_option is None:
        return "noise scale: --sigma"
    return f"noise scale: -o {option_name(method_class.scale_option)}, or --sigma ({scale_relation(method_class)})"


def option_name(field: str) -> str:
    return field.replace("_", "-")


def refuse_sigma(method_class) -> CertifyError:
    return CertifyError(f"plugin {method_class.name} has no noise scale, so --sigma does not apply to it; drop --sigma")


def missing_scale(method_class, why: str = "") -> MissingNoiseScale:
    """The error of a method that needs a noise level and was given none (``why``: where none was found)."""
    scale = method_class.scale_option
    if scale is None:
        needed = "--sigma"
    else:
        needed = f"-o {option_name(scale)} X or --sigma S ({scale_relation(method_class)})"
    return MissingNoiseScale(f"plugin {method_class.name} needs {needed}" + (f"; {why}" if why else ""))


def settle_scale(method_class, sigma: float | None, options) -> tuple[float | None, Any]:
    """(sigma, options) agreeing with each other under the rule, for the method's constructor.

    ``options`` is the method's Options record; its scale option counts as given when it was
    set (pydantic's ``model_fields_set``) or has no default.
    """
    if not method_class.uses_sigma:
        if sigma is not None:
            raise refuse_sigma(method_class)
        return None, options
    scale = method_class.scale_option
    if scale is None:
        if sigma is None:
            raise missing_scale(method_class)
        return sigma, options
    factor = method_class.scale_per_sigma
    value = getattr(options, scale)
    given = value is not None and scale in options.model_fields_set
    if sigma is not None:
        _check_number(sigma)
        if given:
            if not math.isclose(sigma * factor, value, rel_tol=1e-9):
                raise CertifyError(
                    f"plugin {method_class.name}: --sigma {sigma:g} means -o {option_name(scale)} "
                    f"{sigma * factor:g} ({scale_relation(method_class)}), but -o {option_name(scale)} is {value:g}; "
                    f"give only one of them")
        else:
            value = sigma * factor
            options = options.model_copy(update={scale: value})
    elif value is None:
        raise missing_scale(method_class)
    return value / factor, options


def _check_number(sigma) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) and not hasattr(sigma, "__float__"):
        raise CertifyError(f"--sigma must be a number, got {sigma!r}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise CertifyError(f"--sigma must be a positive number, got {sigma}")
