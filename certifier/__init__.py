"""onnx-certifier: certify ONNX classifiers by randomized smoothing."""

from .api import Run, certify, load
from .errors import CertifyError
from .hookspecs import hookimpl
from .methods import Certificate, Options, SmoothingMethod, Votes

__all__ = [
    "Certificate",
    "CertifyError",
    "Options",
    "Run",
    "SmoothingMethod",
    "Votes",
    "certify",
    "hookimpl",
    "load",
]
__version__ = "0.1.0"
