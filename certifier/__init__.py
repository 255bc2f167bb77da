"""onnx-certifier: certify ONNX classifiers by randomized smoothing."""

__version__ = "0.1.0"

import os as _os
import signal as _signal
import sys as _sys


def _interrupted_while_importing(signum, frame):
    # Nothing is open yet, and a library's bare "except:" could swallow SystemExit: leave at once.
    _sys.stderr.write("\ncertify: interrupted\n")
    _sys.stderr.flush()
    _os._exit(130)


# Ctrl-C while the certify command is still importing its libraries: one line and exit
# status 130, not a traceback. Only for the console script (a program importing certifier
# keeps its own Ctrl-C); the command group puts the usual handler back once it starts.
if (_os.path.splitext(_os.path.basename(_sys.argv[0] if _sys.argv else ""))[0] == "certify"
        and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler):
    _signal.signal(_signal.SIGINT, _interrupted_while_importing)

from .api import Job, Result, Run, certify, load  # noqa: E402
from .errors import CertifyError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .methods import (  # noqa: E402
    Certificate, Options, SmoothingMethod, Votes, gaussian_certificate, is_broadcast, lower_bound_certificate,
)

__all__ = [
    "Certificate",
    "CertifyError",
    "Job",
    "Options",
    "Result",
    "Run",
    "SmoothingMethod",
    "Votes",
    "certify",
    "gaussian_certificate",
    "hookimpl",
    "is_broadcast",
    "load",
    "lower_bound_certificate",
]
