"""The certifier.* metadata schema: one module writes and reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import certifier
from certifier import metadata
from certifier.api import make_method
from certifier.space import InputSpace

ROOT = Path(__file__).resolve().parents[1]
CORE_KEYS = ("plugin", "sigma", "options", "classes", "input_space", "group", "dataset", "training", "loss")


def test_what_train_writes_is_what_loading_reads():
    method = make_method("drs", 0.5, {"resize": "nearest"}, {})
    written = metadata.model_metadata(method, input_shape=(1, 4, 4), view_shape=(1, 4, 4), dataset="tiny",
                                      classes=["a", "b"], groups=["left"], training={"epochs": 1})
    assert all(isinstance(value, str) for value in written.values())
    assert metadata.recorded_plugin(written) == "drs"
    assert metadata.recorded_sigma(written) == 0.5
    assert metadata.recorded_options(written, "drs") == {"resize": "nearest", "model_r": None}
    assert metadata.recorded_options(written, "rs") == {}  # another plugin's options are not defaults
    assert metadata.recorded_classes(written) == ["a", "b"]
    assert InputSpace.from_metadata(written).as_dict() == {"scale": 1.0, "mean": None, "std": None, "layout": "nchw"}
    assert metadata.recorded_group(written, "drs") == "left" and metadata.recorded_group(written, "rs") is None
    # what loading a model trained this way starts from
    again = make_method(None, None, {}, written)
    assert (again.name, again.sigma, again.options.resize) == ("drs", 0.5, "nearest")


def test_a_plugin_cannot_replace_the_core_keys():
    class Greedy(certifier.SmoothingMethod):
        name = "greedy"
        norm = "l2"

        def training_metadata(self, input_shape):
            return {"certifier.plugin": "other", "certifier.loss": "{}", "certifier.greedy": "{}"}

    written = metadata.model_metadata(Greedy(sigma=1.0), input_shape=(4,), view_shape=(4,), dataset="d",
                                      classes=["a"], groups=["model"], training={}, loss={"loss": "gaussian"})
    assert written["certifier.plugin"] == "greedy" and written["certifier.greedy"] == "{}"
    assert metadata.recorded_loss(written) == {"loss": "gaussian"}
    assert InputSpace.from_metadata(written).layout == "flat"


@pytest.mark.parametrize("raw", ["[1, 2]", "not json", "3"])
def test_a_plugin_record_that_is_not_an_object_is_one_line(raw):
    with pytest.raises(certifier.CertifyError, match=r"^the model's certifier.mine metadata is not a JSON object; "):
        metadata.recorded_json({"certifier.mine": raw}, "certifier.mine")
    assert metadata.recorded_json({}, "certifier.mine") is None


def test_only_the_metadata_module_names_the_core_keys():
    pattern = re.compile(r"""["']certifier\.(%s)["']""" % "|".join(CORE_KEYS))
    sources = [*sorted((ROOT / "certifier").glob("*.py")), *sorted((ROOT / "plugins").glob("*.py"))]
    offenders = [f"{path.name}:{number}" for path in sources if path.name != "metadata.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
