"""The results header: what a results file records about its run, and what each entry is.

:func:`build_header` writes every header (:func:`build_attack_header` makes an attack's of
one), and :data:`HEADER_KEYS` classifies every key they write. Resuming a results file
(``certifier.results``) and a Ray worker checking its engine against the driver's
(``certifier.remote``) both read that one table:

- identity: what determines the records (the settings, the hashes of the models and the
  data). A results file holding another value is not resumed; a worker whose engine gives
  another value refuses to run.
- derived: what the code computes from the identity (the threat model, the radius ceiling,
  the version of certify itself). A worker must match the driver's (it runs the driver's
  code); resuming does not compare them, so a newer certify resumes an older file.
- location: where the run reads and runs, and when (paths, device, start time); never compared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .methods import threat_of
from .version import __version__

if TYPE_CHECKING:
    from .api import Run
    from .engine import Engine

IDENTITY, DERIVED, LOCATION = "identity", "derived", "location"

#: Every key a results header may hold, in the order headers are written, with its kind.
HEADER_KEYS: dict[str, str] = {
    "certifier_version": DERIVED,
    "mode": IDENTITY,
    "plugin": IDENTITY,
    "norm": DERIVED,
    "threat_model": DERIVED,
    "settings": IDENTITY,
    "exact": DERIVED,
    "n0": IDENTITY,
    "n": IDENTITY,
    "alpha": IDENTITY,
    "seed": IDENTITY,
    "batch_size": IDENTITY,
    "sampling": IDENTITY,
    "sampling_settings": IDENTITY,
    "model": LOCATION,
    "model_sha256": IDENTITY,
    "group_models": IDENTITY,
    "denoiser": LOCATION,
    "denoiser_sha256": IDENTITY,
    "denoiser_metadata": DERIVED,
    # a diffusion noise predictor as a one-shot denoiser: how it was used (its file is denoiser_sha256)
    "denoiser_kind": IDENTITY,
    "schedule": IDENTITY,
    "timestep": IDENTITY,
    "alpha_bar": IDENTITY,
    "data_range": IDENTITY,
    "timestep_convention": IDENTITY,
    "output_name": IDENTITY,
    "output_kind": IDENTITY,
    "input_space": IDENTITY,
    "resize": IDENTITY,
    "data": LOCATION,
    "data_sha256": IDENTITY,
    "radius_ceiling": DERIVED,
    "device": LOCATION,
    "started": LOCATION,
    # certify attack's results (certifier.attack_job): the attack's own settings, the certify
    # results file whose certificates it checks, and why its search could not use gradients
    "attack": IDENTITY,
    "certified": LOCATION,
    "gradient_note": DERIVED,
    # last, so that a header of an older version torn by a kill is still seen as the start of this one
    "noise_stream": IDENTITY,
}
#: Identity keys that headers record only since a later version: a file without one resumes
#: without that check. batch_size: each batch of views is drawn from its own noise stream,
#: so another batch size gives other views.
RECORDED_LATER = ("batch_size",)
#: Identity keys that headers record only since a later version, with the value a header without
#: one holds implicitly. noise_stream: which views a seed gives (``certifier.noise``); files
#: written before streams were numbered were drawn with stream 1.
IMPLIED_WHEN_ABSENT: dict[str, Any] = {"noise_stream": 1}
#: Identity keys every results file records.
IDENTITY_KEYS = tuple(k for k, kind in HEADER_KEYS.items()
                      if kind == IDENTITY and k not in RECORDED_LATER and k not in IMPLIED_WHEN_ABSENT)
#: Where a run reads and runs, and when.
LOCATION_KEYS = tuple(k for k, kind in HEADER_KEYS.items() if kind == LOCATION)
#: Keys that legitimately differ between two runs with the same settings: where each ran,
#: and the version of certify that ran it.
INCIDENTAL_KEYS = ("certifier_version", *LOCATION_KEYS)


@dataclass(frozen=True)
class DataStamp:
    """What a header records about the data: where it was read and its hash (see ``Dataset.fingerprint``)."""

    source: str | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, dataset) -> "DataStamp":
        return cls(dataset.source, dataset.fingerprint())


def build_header(run: Run, engine: Engine, *, mode: str, data: DataStamp, device: str | None) -> dict[str, Any]:
    """Everything that determines a job's results, as its results file records it."""
    method = run.method
    plan = {"n0": None, "n": None, **engine.plan.settings()}
    header = {
        "certifier_version": __version__,
        "mode": mode,
        "plugin": method.name,
        "norm": method.norm,
        "threat_model": threat_of(method).as_dict(),
        "settings": method.settings(),
        "exact": method.deterministic,
        "n0": None if mode == "predict" else plan["n0"],
        "n": plan["n"],
        "alpha": None if method.deterministic else engine.alpha,
        "seed": engine.seed,
        # views are drawn batch by batch, one noise stream per batch: a resumed run must keep the batch size
        "batch_size": None if method.deterministic else engine.batch_size,
        "sampling": engine.plan.name,
        # a plan's settings beyond n0 and n (the fixed plans have none)
        "sampling_settings": {k: v for k, v in plan.items() if k not in ("n0", "n")} or None,
        "model": str(run.model.path),
        "model_sha256": run.model.sha256,
        "group_models": {g.name: g.model.sha256 for g in engine.groups if g.model is not run.model},
        **_denoiser_fields(run.denoiser),
        "output_name": run.model.output.name if run.output_name else None,
        "output_kind": run.model.output.requested,
        "input_space": engine.groups[0].adapter.space.as_dict(),
        "resize": list(run.resize) if run.resize else None,
        "data": data.source,
        "data_sha256": data.sha256,
        "radius_ceiling": None if mode == "predict" else engine.radius_ceiling(),
        "device": device,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "noise_stream": engine.noise_stream,
    }
    if header["sampling_settings"] is None:
        del header["sampling_settings"]  # results files of the fixed plans stay as they were
    return header


def build_attack_header(certify_header: dict[str, Any], *, seed: int, attack: dict[str, Any],
                        certified: Path | None = None, gradient_note: str | None = None) -> dict[str, Any]:
    """The header of ``certify attack``'s results: the certify header of its confirmations'
    settings (``certify_header``) as mode "attack" with the user's ``seed`` (the confirmations
    draw from a stream derived from it) and no radius ceiling, the attack's settings under
    "attack", the certify results file it checks, and why its search could not use gradients."""
    header = {key: value for key, value in certify_header.items() if key != "radius_ceiling"}
    header.update(mode="attack", seed=seed, attack=attack)
    if gradient_note:
        header["gradient_note"] = gradient_note
    if certified is not None:
        header["certified"] = str(certified)
    return header


def _denoiser_fields(denoiser) -> dict[str, Any]:
    """The header's record of a denoiser: its file, hash and metadata (nothing without one,
    so headers of runs without a denoiser stay as they were)."""
    if denoiser is None:
        return {}
    return {"denoiser": str(denoiser.path), "denoiser_sha256": denoiser.sha256,
            "denoiser_metadata": denoiser.description(), **denoiser.header_fields()}


def settings_differ(old: dict, new: dict) -> list[str]:
    """The identity keys in which a results file's header (``old``) differs from a run's."""
    return ([k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
            + [k for k in RECORDED_LATER if k in old and old[k] != new.get(k)]
            + [k for k, implied in IMPLIED_WHEN_ABSENT.items() if old.get(k, implied) != new.get(k, implied)])
