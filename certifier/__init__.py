"""onnx-certifier: certify ONNX classifiers by randomized smoothing."""

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

# The public API: everything Python programs and plugins use comes from here (the
# plugin guide, docs/writing-a-plugin.md, documents each name); the modules behind it are internal.
# noqa: E402 below: the Ctrl-C handler above must be in place before these imports start.
from .version import __version__  # noqa: E402,F401
from .api import Job, Result, Run, certify, load, make_method  # noqa: E402
from .attack_job import AttackJob  # noqa: E402
from .command_options import method_options, settings_options  # noqa: E402
from .data import load_data  # noqa: E402
from .diffusion import choose_step, schedule_option  # noqa: E402
from .errors import CertifyError, MissingNoiseScale  # noqa: E402
from .files import check_output_file, replacing_file  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .metadata import (  # noqa: E402
    denoiser_metadata, diffusion_metadata, model_metadata, read_metadata, recorded_group, recorded_json,
)
from .model import load_model  # noqa: E402
from .methods import (  # noqa: E402
    Certificate, Options, SmoothingMethod, SoundnessCheck, Votes, gaussian_certificate, is_broadcast,
    lower_bound_certificate, threat_of, two_bound_gaussian_certificate,
)
from .noise import LARGEST_STANDARD_NORMAL, gaussian_views, standard_normal  # noqa: E402
from .resources import check_memory  # noqa: E402
from .one_line import stopping_cleanly  # noqa: E402
from .settings import (  # noqa: E402
    LEARNING_RATES, InputSpaceSettings, JobSettings, LearningRate, MethodSettings, ModelSettings, Range, RunSettings, TrainingData,
    Settings, TrainingSettings, ValidationFraction, flag, takes,
)
from .space import LAYOUTS, MAX_INPUT_MAGNITUDE, InputSpace, ModelAdapter  # noqa: E402
from .stats import gaussian_quantile  # noqa: E402
from .summaries import format_summary, summarize  # noqa: E402
from .threats import ThreatModel  # noqa: E402

__all__ = [
    # running certifications
    "load", "certify", "Run", "Job", "Result", "summarize", "format_summary",
    "ModelSettings", "JobSettings", "RunSettings",
    # writing a plugin
    "hookimpl", "SmoothingMethod", "Options", "Votes", "Certificate", "CertifyError", "MissingNoiseScale",
    "lower_bound_certificate", "gaussian_certificate", "two_bound_gaussian_certificate", "is_broadcast",
    "gaussian_views", "standard_normal", "LARGEST_STANDARD_NORMAL", "MAX_INPUT_MAGNITUDE",
    "gaussian_quantile", "make_method", "load_data", "read_metadata", "recorded_group", "recorded_json",
    "model_metadata", "method_options", "ThreatModel", "threat_of", "SoundnessCheck",
    # commands plugins add: their settings as records, their options made from them
    "settings_options", "flag", "Range", "Settings", "takes", "MethodSettings", "InputSpaceSettings", "TrainingSettings", "TrainingData",
    "LearningRate", "LEARNING_RATES", "ValidationFraction",
    # commands that write files or take memory
    "check_output_file", "replacing_file", "check_memory", "stopping_cleanly",
    # opening a model as certify does (for plugins that train through a classifier)
    "load_model", "InputSpace", "ModelAdapter", "LAYOUTS", "denoiser_metadata",
    # attacks beside certificates (certifier_plugins.attack searches; the job confirms)
    "AttackJob",
    # diffusion noise predictors (certify train-denoiser --kind diffusion)
    "diffusion_metadata", "schedule_option", "choose_step",
]
