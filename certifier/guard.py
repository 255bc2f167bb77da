"""The guard around plugin code: every call into a plugin, and every answer it gives, checked here.

A plugin's failure becomes one line naming the plugin and the hook; an answer of the wrong
kind (a view shape that is not a tuple of ints, a certificate with a NaN radius, views of
the wrong shape) is refused before anything uses it. The API (opening models, vote groups)
and the engine (views, votes, certificates) both call plugins only through this module.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import DEBUG_VARIABLE, CertifyError, caused_by_interrupt, one_line
from .methods import Certificate, SmoothingMethod
from .settings import MAX_SAMPLES


def plugin_call(method: SmoothingMethod, hook: str, function: Callable, *args, **kwargs):
    """Call one of a plugin's methods; any failure but a CertifyError becomes one line naming the plugin."""
    try:
        return function(*args, **kwargs)
    except CertifyError:
        raise
    except MemoryError:
        raise CertifyError(f"out of memory in plugin {method.name}'s {hook}(); lower --batch-size "
                           f"(or --workers)") from None
    except Exception as error:
        if caused_by_interrupt(error):
            raise KeyboardInterrupt from None
        if os.environ.get(DEBUG_VARIABLE):
            raise
        raise CertifyError(f"plugin {method.name} failed in {hook}(): {one_line(error)} (a bug in the plugin: "
                           f"report it to its author; {DEBUG_VARIABLE}=1 shows the traceback)") from None


def kind(value: Any) -> str:
    """How a wrong answer is named in an error: None, or its type ("a numpy.float64")."""
    if value is None:
        return "None"
    kind = type(value)
    return f"a {kind.__name__}" if kind.__module__ == "builtins" else f"a {kind.__module__}.{kind.__name__}"


def checked_view_shape(method: SmoothingMethod, shape) -> tuple[int, ...]:
    """A plugin's view shape as a tuple of positive ints."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise CertifyError(f"plugin {method.name}: view_shape() must return a tuple of positive ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def checked_group_model(method: SmoothingMethod, path) -> str | os.PathLike | None:
    """A plugin's group_model() answer: a path or None."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise CertifyError(f"plugin {method.name}: group_model() must return a path or None, got {path!r}")
    return path


def checked_num_views(method: SmoothingMethod, count: Any) -> int:
    """A deterministic plugin's num_views() answer: an int between 1 and MAX_SAMPLES."""
    if isinstance(count, (bool, np.bool_)) or not isinstance(count, numbers.Integral):
        raise CertifyError(f"plugin {method.name}: num_views() must return an int, got {count!r}")
    count = int(count)
    if not 1 <= count <= MAX_SAMPLES:
        raise CertifyError(f"plugin {method.name}: num_views() gave {count} views per input; it must be "
                           f"between 1 and 10^15")
    return count


def checked_inputs(method: SmoothingMethod, x: Any, batch: np.ndarray) -> np.ndarray:
    """A plugin's check_inputs() answer: an array like the batch it was given."""
    if not isinstance(x, np.ndarray) or x.shape != batch.shape or x.dtype.kind not in "biuf":
        raise CertifyError(f"plugin {method.name}: check_inputs() must return an array like its input "
                           f"(shape {batch.shape}), got {kind(x)}")
    return x


def checked_views(method: SmoothingMethod, hook: str, views: Any, shape: Sequence[int], group: str, index: int,
                  overflow_hint: Callable[[], str]) -> np.ndarray:
    """One batch of a plugin's views: a real array of ``shape`` (views, *view_shape), every value finite."""
    if not isinstance(views, np.ndarray):
        raise CertifyError(f"plugin {method.name}: {hook}() returned {kind(views)}; it must return a numpy "
                           f"array of views")
    if views.shape != tuple(shape):
        raise CertifyError(
            f"plugin {method.name} made views of shape {views.shape[1:]} for group "
            f"{group!r}; it declared {tuple(shape[1:])}"
        )
    if views.dtype.kind not in "biuf":
        raise CertifyError(f"plugin {method.name} made views of dtype {views.dtype}; views are real numbers "
                           f"in pixel space (float32)")
    # A finite sum proves every value finite; a sum can overflow, so only then look closer.
    if views.dtype.kind == "f" and not np.isfinite(views.sum()) and not np.isfinite(views).all():
        raise CertifyError(
            f"plugin {method.name} made views holding NaN or infinity (input {index}, group "
            f"{group!r}){overflow_hint()}"
        )
    return views


def checked_prediction(method: SmoothingMethod, where: str, value: Any, classes: int) -> int | None:
    """A plugin's predicted class as an int in [0, classes), or None (abstain)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise CertifyError(f"plugin {method.name}: {where} gave the prediction {value!r} ({kind(value)}); "
                           f"a prediction is a class index (an int) or None to abstain")
    value = int(value)
    if not 0 <= value < classes:
        raise CertifyError(f"plugin {method.name}: {where} predicted class {value}, but the model's classes are "
                           f"0..{classes - 1}; abstain with None")
    return value


def radius_value(method: SmoothingMethod, radius: Any) -> float:
    """A certificate's radius as a float (any real number: callers decide what is in range)."""
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, numbers.Real):
        raise CertifyError(f"plugin {method.name} gave the radius {radius!r} ({kind(radius)}); a radius is a number")
    return float(radius)


def is_certificate(method: SmoothingMethod, answer: Any) -> Certificate:
    """``answer`` when it is a Certificate, else a one-line refusal."""
    if not isinstance(answer, Certificate):
        raise CertifyError(f"plugin {method.name}: certify() must return a certifier.Certificate, "
                           f"not {kind(answer)}")
    return answer


def checked_certificate(method: SmoothingMethod, certificate: Any, classes: int) -> Certificate:
    """A plugin's certificate, validated and made of plain Python values (what results files hold)."""
    certificate = is_certificate(method, certificate)
    prediction = checked_prediction(method, "certify()", certificate.prediction, classes)
    radius = radius_value(method, certificate.radius)
    if not (math.isfinite(radius) and radius >= 0):
        raise CertifyError(f"plugin {method.name} returned an invalid radius {radius!r} (a radius is a finite "
                           f"number >= 0)")
    if prediction is None and radius != 0:
        raise CertifyError(f"plugin {method.name} abstained with a non-zero radius")
    exact = certificate.exact
    if not isinstance(exact, (bool, np.bool_)):
        raise CertifyError(f"plugin {method.name}: a certificate's exact must be True or False, got {exact!r}")
    if exact and not method.deterministic:
        raise CertifyError(f"plugin {method.name} is randomized (it samples views) but marked a certificate "
                           f"exact; only deterministic methods give exact certificates")
    conditional = certificate.conditional
    if conditional is not None and not isinstance(conditional, str):
        raise CertifyError(f"plugin {method.name}: a certificate's conditional must be a string or None, "
                           f"got {conditional!r}")
    if not isinstance(certificate.details, Mapping):
        raise CertifyError(f"plugin {method.name}: a certificate's details must be a dict, "
                           f"got {kind(certificate.details)}")
    details = _plain(method, certificate.details, "details")
    return Certificate(prediction, radius, bool(exact), conditional, details)


def _plain(method: SmoothingMethod, value: Any, where: str):
    """``value`` with numpy scalars and arrays made plain Python (JSON) values; NaN and inf become None."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _plain(method, value.tolist(), where)
    if isinstance(value, Mapping):
        return {str(k): _plain(method, v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(method, v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CertifyError(f"plugin {method.name} put {kind(value)} in its certificate's {where}; details hold "
                       f"numbers, strings, lists and dicts")
