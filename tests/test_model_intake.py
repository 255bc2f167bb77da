"""Model intake hardening (issue 9): outputs without one row per input, single scores that
are neither shown nor said to be probabilities, odd batch axes and output shapes, quiet
probes, and small hostile files that would exhaust time or memory."""

from __future__ import annotations

import json
import sys
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import certifier
from certifier import CertifyError
from certifier import model as model_module
from certifier import onnx_file, outputs
from certifier.cli import cli
from certifier.metadata import MAX_CLASSES
from certifier.model import UNDECLARED_LABEL_CLASSES, load_model

from onnx_models import (
    chain_model,
    fixed_reshape_model,
    fixed_transposed_model,
    huge_input_model,
    linear_model,
    ml_classifier_model,
    nested_if_model,
    odd_output_model,
    offset_label_model,
    save,
    single_score_model,
    spatial_model,
    with_external_weights,
    write,
)


def weights(features: int, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, classes))
    w -= w.mean(axis=0)
    return w.astype(np.float32), rng.normal(size=classes).astype(np.float32) * 0.1


def pixels(*shape: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (x.reshape(len(x), -1).astype(np.float64) @ w + b).argmax(axis=1)


def certify(path, x, **load_options):
    run = certifier.load(path, plugin="rs", sigma=1e-5, device="cpu", **load_options)
    return run.certify(x, n0=3, n=16, alpha=0.05)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# -- 1. one row per input -----------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("declared", ["honest", "lying"])
def test_a_transposed_output_is_refused(tmp_path, classes, declared):
    w, b = weights(4, classes)
    shape = None if declared == "honest" else ["N", classes]
    path = save(odd_output_model(w, b, (4,), "transposed", declared=shape), tmp_path / "m.onnx")
    shape_message = r"output 'scores' has shape \(\d+, \d+\) for a batch of \d inputs"
    with pytest.raises(CertifyError, match=shape_message) as raised:
        load_model(path, device="cpu")
    assert "one row per input" in one_line(raised)


@pytest.mark.parametrize("reshape", [True, False], ids=["fixed-only", "could-be-dynamic"])
def test_a_transposed_output_is_refused_when_the_fixed_batch_equals_the_class_count(tmp_path, reshape):
    # (C, N) with C == N == 4: the shape looks right; reordering the inputs must reorder rows.
    path = save(fixed_transposed_model(6, 4, reshape=reshape), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="does not follow its inputs.*transposed") as raised:
        load_model(path, device="cpu")
    one_line(raised)


def test_a_square_fixed_batch_that_follows_its_inputs_is_accepted(tmp_path):
    w, b = weights(6, 4)
    path = save(fixed_reshape_model(w, b, (6,), batch=4), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert model.fixed_batch == 4 and model.num_classes == 4
    x = pixels(7, 6)
    assert list(model.labels(x)) == list(reference(x, w, b))


def test_output_rows_are_checked_on_every_batch(tmp_path):
    # Rows 0..2 only: batches of 2 and 3 (the load-time probe) look right, a batch of 5 does not.
    w, b = weights(4)
    path = save(odd_output_model(w, b, (4,), "first-rows"), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    x = pixels(5, 4)
    assert list(model.labels(x[:3])) == list(reference(x[:3], w, b))
    with pytest.raises(CertifyError, match=r"output 'scores' has shape \(3, 3\) for a batch of 5 inputs") as raised:
        model.labels(x)
    one_line(raised)
    with pytest.raises(CertifyError, match="for a batch of"):
        certify(path, x[:2])  # 3 + 16 views per input: batches of more than 3 rows


def test_an_output_with_too_many_rows_is_refused(tmp_path):
    w, b = weights(4)
    path = save(odd_output_model(w, b, (4,), "doubled"), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match=r"shape \(4, 3\) for a batch of 2 inputs"):
        load_model(path, device="cpu")


def test_declared_and_actual_widths_must_agree(tmp_path):
    w, b = weights(4, 3)
    model = linear_model(w, b, (4,))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    path = write(model, tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="should give 5 values per input but gives 3"):
        load_model(path, device="cpu")


# -- 2. single scores: never guess logit or probability ----------------------------------------


def two_column_weights():
    w = np.array([[1.0, 0.3], [-1.0, 0.2], [0.5, -0.1], [0.0, 0.4]], dtype=np.float32)
    x = pixels(40, 4)
    b = np.array([-float(np.median(x @ w[:, 0])), 0.0], dtype=np.float32)
    return w, b, x


@pytest.mark.parametrize("how", ["sigmoid-gather", "sigmoid-slice"])
def test_a_sigmoid_seen_through_value_keeping_ops_is_a_probability(tmp_path, how):
    w, b, x = two_column_weights()
    path = save(single_score_model(w, b, (4,), how), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert (model.output.kind, model.output.threshold, model.num_classes) == ("binary", 0.5, 2)
    expected = ((x @ w + b)[:, 0] > 0).astype(int)
    assert 0 < expected.sum() < len(expected)  # the old threshold 0 made every input class 1
    assert list(model.labels(x)) == list(expected)
    assert [r.prediction for r in certify(path, x[:6])] == list(expected[:6])


@pytest.mark.parametrize("how", ["sigmoid-doubled", "relu"])
def test_a_single_score_the_graph_does_not_explain_is_refused(tmp_path, how):
    w, b, _ = two_column_weights()
    path = save(single_score_model(w, b, (4,), how), tmp_path / "m.onnx")
    message = "'score' holds one score per input.*--output-kind binary-probability"
    with pytest.raises(CertifyError, match=message) as raised:
        load_model(path, device="cpu")
    one_line(raised)


def test_a_said_logit_is_read_with_threshold_zero(tmp_path):
    w, b, x = two_column_weights()
    path = save(single_score_model(w, b, (4,), "relu"), tmp_path / "m.onnx")
    model = load_model(path, device="cpu", output_kind="binary-logit")
    assert model.output.threshold == 0.0
    assert list(model.labels(x)) == list(((x @ w + b)[:, 0] > 0).astype(int))


def test_a_said_probability_outside_0_1_is_refused(tmp_path):
    w, b, x = two_column_weights()
    path = save(single_score_model(w, b * 0 + 5, (4,), "relu"), tmp_path / "m.onnx")
    model = load_model(path, device="cpu", output_kind="binary-probability")
    with pytest.raises(CertifyError, match=r"outside \[0, 1\], so it is not a probability.*binary-logit") as raised:
        model.labels(x)
    one_line(raised)


@pytest.mark.parametrize("build, kind, message", [
    (lambda w, b: linear_model(w, b, (4,)), "label", "label does not fit output 'logits'.*float scores, 3 per input"),
    (lambda w, b: linear_model(w, b, (4,)), "binary-logit", "binary-logit does not fit output 'logits'.*3 class"),
    (lambda w, b: linear_model(w, b, (4,)), "binary-probability", "binary-probability does not fit"),
    (lambda w, b: linear_model(w[:, :1], b[:1], (4,)), "logits", "logits does not fit output 'logits'.*one score"),
    (lambda w, b: linear_model(w[:, :1], b[:1], (4,), output="sigmoid"), "probabilities", "one score per input"),
    (lambda w, b: linear_model(w[:, :1], b[:1], (4,), output="sigmoid"), "binary-logit", "contradicts.*Sigmoid"),
    (lambda w, b: linear_model(w, b, (4,), output="label"), "logits", "logits does not fit output 'label': it holds int"),
], ids=["label-on-scores", "binary-logit-on-scores", "binary-probability-on-scores", "logits-on-one-score",
        "probabilities-on-one-score", "logit-on-a-sigmoid", "logits-on-a-label"])
def test_an_output_kind_that_does_not_fit_is_refused(tmp_path, build, kind, message):
    w, b = weights(4)
    path = save(build(w, b), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match=message) as raised:
        load_model(path, device="cpu", output_kind=kind)
    one_line(raised)


def test_an_output_kind_that_fits_the_named_output_is_refused_when_it_does_not(tmp_path):
    w, b = weights(4)
    path = save(linear_model(w, b, (4,), output="label+probabilities"), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="--output-kind label does not fit output 'probabilities'"):
        load_model(path, device="cpu", output_name="probabilities", output_kind="label")
    with pytest.raises(CertifyError, match="--output-kind must be one of"):
        load_model(path, device="cpu", output_kind="odds")


def test_output_kind_label_picks_the_label_output(tmp_path):
    w, b = weights(4)
    path = save(linear_model(w, b, (4,), output="label+probabilities"), tmp_path / "m.onnx")
    model = load_model(path, device="cpu", output_kind="label")
    assert (model.output.name, model.output.kind) == ("label", "label")
    x = pixels(10, 4)
    assert list(model.labels(x)) == list(reference(x, w, b))


@pytest.mark.parametrize("output, kind", [("logits", "logits"), ("logits", "probabilities"), ("probabilities", None),
                                          ("probabilities", "logits")])
def test_class_scores_are_argmaxed_whatever_they_are_called(tmp_path, output, kind):
    w, b = weights(4, 4)
    path = save(linear_model(w, b, (4,), output=output), tmp_path / "m.onnx")
    x = pixels(12, 4)
    assert list(load_model(path, device="cpu", output_kind=kind).labels(x)) == list(reference(x, w, b))


def test_the_command_line_names_and_takes_output_kind(tmp_path):
    w, b, x = two_column_weights()
    path = save(single_score_model(w, b, (4,), "relu"), tmp_path / "m.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=x[:3])
    args = ["run", path, "--plugin", "rs", "-s", "0.1", "--n0", "5", "-n", "20", "-q", "--device", "cpu",
            "--data", data]
    refused = CliRunner().invoke(cli, [str(a) for a in args])
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    errors = [line for line in refused.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--output-kind binary-logit" in errors[0]
    output = tmp_path / "run.jsonl"
    accepted = CliRunner().invoke(cli, [str(a) for a in args + ["--output-kind", "binary-logit", "--output", output]])
    assert accepted.exit_code == 0, accepted.output
    header = json.loads(output.read_text().splitlines()[0])
    assert header["output_kind"] == "binary-logit"


# -- 6. batch axes stored as -1 or 0 ------------------------------------------------------------


@pytest.mark.parametrize("stored", [-1, 0])
def test_a_batch_axis_stored_as_minus_one_or_zero_is_dynamic(tmp_path, stored):
    w, b = weights(4)
    model = linear_model(w, b, (4,))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = stored
    path = write(model, tmp_path / "m.onnx")
    loaded = load_model(path, device="cpu")
    assert loaded.fixed_batch is None and loaded.declared_batch is None
    x = pixels(9, 4)
    calls = []
    real_run = loaded._run
    loaded._run = lambda batch: calls.append(len(batch)) or real_run(batch)
    assert list(loaded.labels(x)) == list(reference(x, w, b))
    assert calls[0] == 9  # then the first batch of 9 is checked for coupling, once
    calls.clear()
    assert list(loaded.labels(x)) == list(reference(x, w, b))
    assert calls == [9]
    assert [r.prediction for r in certify(path, x[:3])] == list(reference(x[:3], w, b))


# -- 7. class scores shaped (N, C, 1, 1) ----------------------------------------------------------


def test_scores_shaped_n_c_1_1_are_read_as_n_c(tmp_path):
    w, b = weights(12, 5)
    path = save(odd_output_model(w, b, (3, 2, 2), "nc11"), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert (model.output.kind, model.num_classes) == ("scores", 5)
    x = pixels(8, 3, 2, 2)
    assert list(model.labels(x)) == list(reference(x, w, b))
    assert [r.prediction for r in certify(path, x[:3])] == list(reference(x[:3], w, b))


def test_a_feature_map_is_not_a_classifier_output(tmp_path):
    w, b = weights(4, 6)
    declared = save(odd_output_model(w, b, (4,), "map"), tmp_path / "declared.onnx")
    with pytest.raises(CertifyError, match="found no classifier output"):
        load_model(declared, device="cpu")
    hidden = save(odd_output_model(w, b, (4,), "map", declared=[]), tmp_path / "hidden.onnx")
    hidden_model = onnx_file.read_model(hidden)[0]
    hidden_model.graph.output[0].type.tensor_type.ClearField("shape")
    hidden = write(hidden_model, tmp_path / "hidden.onnx")
    with pytest.raises(CertifyError, match=r"values of shape \(2, 3\), not one row of class scores"):
        load_model(hidden, device="cpu")


# -- 8. quiet probes ---------------------------------------------------------------------------------


def test_probes_that_fail_print_nothing(tmp_path, capfd):
    w, b = weights(16)
    path = save(fixed_reshape_model(w, b, (16,), batch=4), tmp_path / "m.onnx")
    capfd.readouterr()
    model = load_model(path, device="cpu")
    assert model.fixed_batch == 4  # the dynamic copy was tried, and failed
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_real_failure_is_one_line_and_onnxruntime_stays_quiet(tmp_path, capfd):
    # Declares a dynamic batch, but reshapes to a constant batch of 4.
    w, b = weights(16)
    model = fixed_reshape_model(w, b, (16,), batch=4)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    path = save(model, tmp_path / "m.onnx")
    capfd.readouterr()
    with pytest.raises(CertifyError, match="onnxruntime cannot run m.onnx on 2 random inputs of shape") as raised:
        load_model(path, device="cpu")
    one_line(raised)
    assert capfd.readouterr().err == ""


# -- 12. small files that would exhaust the machine ------------------------------------------------


def test_a_huge_label_is_refused_without_allocating_by_it(tmp_path):
    w = np.zeros((4, 3), dtype=np.float32)
    path = save(offset_label_model(w, 1 << 30, (4,)), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert model.num_classes == UNDECLARED_LABEL_CLASSES and model.output.num_classes is None
    with pytest.raises(CertifyError, match=r"gave class 1073741824; .*certifier\.classes metadata") as raised:
        model.labels(pixels(3, 4))
    one_line(raised)
    tracemalloc.start()
    try:
        with pytest.raises(CertifyError, match="gave class 1073741824"):
            certify(path, pixels(2, 4))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the old engine grew its votes to 8 GiB


def test_a_label_outside_the_declared_classes_is_refused(tmp_path):
    w = np.zeros((4, 3), dtype=np.float32)
    metadata = {"certifier.classes": json.dumps(["a", "b", "c"])}
    model = offset_label_model(w, 5, (4,))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = save(model, tmp_path / "m.onnx")
    loaded = load_model(path, device="cpu")
    assert loaded.num_classes == 3
    with pytest.raises(CertifyError, match=r"gave class 5, outside its 3 classes \(0 to 2\)"):
        loaded.labels(pixels(2, 4))


def test_negative_labels_are_refused(tmp_path):
    path = save(offset_label_model(np.zeros((4, 3), dtype=np.float32), -1, (4,)), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="gave class -1"):
        load_model(path, device="cpu").labels(pixels(2, 4))


def test_votes_are_sized_by_the_class_count_and_never_grow(tmp_path):
    path = save(linear_model(*weights(4), (4,)), tmp_path / "m.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.1, device="cpu")
    engine = run.engine((4,))
    votes = [np.zeros(3, dtype=np.int64)]
    engine._count(votes, 0, np.array([0, 2, 2]))
    assert list(votes[0]) == [1, 0, 2]
    for bad in ([3], [1 << 30], [-1]):
        with pytest.raises(CertifyError, match="outside its 3 classes"):
            engine._count(votes, 0, np.array(bad))
    assert len(votes[0]) == 3 and list(votes[0]) == [1, 0, 2]


def test_a_class_count_comes_from_the_classifier_attributes(tmp_path):
    coefficients = np.random.default_rng(0).normal(size=(4, 3))
    path = save(ml_classifier_model(coefficients, [0, 1, 2]), tmp_path / "m.onnx")
    assert load_model(path, device="cpu", output_name="label").num_classes == 3
    assert load_model(path, device="cpu").num_classes == 3  # the scores
    x = pixels(10, 4)
    labels = load_model(path, device="cpu", output_name="label").labels(x)
    assert list(labels) == list(reference(x, coefficients, np.zeros(3)))
    sparse = save(ml_classifier_model(coefficients, [0, 4, 7]), tmp_path / "sparse.onnx")
    assert load_model(sparse, device="cpu", output_name="label").num_classes == 8


def test_a_class_count_comes_from_the_scores_an_argmax_reads(tmp_path):
    w, b = weights(4, 6)
    model = linear_model(w, b, (4,), output="label")
    model.graph.value_info.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6]))
    path = save(model, tmp_path / "m.onnx")
    assert load_model(path, device="cpu").num_classes == 6


def test_declared_class_counts_must_agree(tmp_path):
    w, b = weights(4, 3)
    path = save(linear_model(w, b, (4,), metadata={"certifier.classes": json.dumps(list("abcd"))}), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="metadata lists 4 classes but its output 'logits' has 3"):
        load_model(path, device="cpu")


@pytest.mark.parametrize("raw", ["[" * 100_000 + "]" * 100_000, '{"a": 1}', "[]", "not json", '[["a"], ["b"]]'])
def test_malformed_class_names_are_refused_in_one_line(tmp_path, raw):
    w, b = weights(4, 3)
    path = save(linear_model(w, b, (4,), metadata={"certifier.classes": raw}), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="certifier.classes metadata is not a JSON list") as raised:
        load_model(path, device="cpu")
    one_line(raised)


def test_more_classes_than_certify_handles_are_refused_before_running(tmp_path):
    path = save(huge_input_model(MAX_CLASSES + 1), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match=f"has {MAX_CLASSES + 1} classes; certify handles at most {MAX_CLASSES}"):
        load_model(path, device="cpu")


def test_a_fixed_batch_of_a_hundred_million_is_refused_before_allocating(tmp_path):
    w, b = weights(1000, 3)
    path = save(fixed_reshape_model(w, b, (1000,), batch=10**8), tmp_path / "m.onnx")
    tracemalloc.start()
    try:
        with pytest.raises(CertifyError, match="only takes batches of exactly 100000000 inputs") as raised:
            load_model(path, device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(raised)
    assert peak < 64 << 20


def test_a_huge_input_shape_is_refused_before_allocating(tmp_path):
    path = save(huge_input_model(100_000), tmp_path / "m.onnx")  # 40 GB per input
    with pytest.raises(CertifyError, match=r"one input of shape 100000x100000 takes 37\.3 GiB") as raised:
        load_model(path, device="cpu")
    one_line(raised)


def test_a_fixed_batch_is_checked_against_the_memory_there_is(tmp_path, monkeypatch):
    w, b = weights(16)
    path = save(linear_model(w, b, (16,), batch=4), tmp_path / "m.onnx")  # could be made dynamic
    one_batch = 4 * (16 * 4 + 3 * 8)
    monkeypatch.setattr(model_module, "memory_budget", lambda: one_batch - 1)
    with pytest.raises(CertifyError, match="only takes batches of exactly 4 inputs"):
        load_model(path, device="cpu")
    # Room for one batch but not for the three the dynamic check runs: chunks, one at a time.
    monkeypatch.setattr(model_module, "memory_budget", lambda: one_batch * 3 - 1)
    model = load_model(path, device="cpu", threads=4)
    assert model.fixed_batch == 4 and model.parallel_runs == 2
    x = pixels(6, 16)
    assert list(model.labels(x)) == list(reference(x, w, b))


def test_external_data_larger_than_memory_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    w, b = weights(4)
    model, data = with_external_weights(linear_model(w, b, (4,)), "W.bin")
    (folder / "W.bin").write_bytes(data)
    path = write(model, folder / "m.onnx")
    monkeypatch.setattr(onnx_file, "memory_budget", lambda: len(data) - 1)
    with pytest.raises(CertifyError, match="external data files hold"):
        load_model(path, device="cpu")


def test_the_walk_back_to_a_sigmoid_is_linear(tmp_path, monkeypatch):
    """6,000 Identity nodes between the Sigmoid and the output: the old search scanned the
    whole graph at every step (9 to 28 s); now one map, one look-up per node."""
    lookups, maps = [0], [0]

    class CountingMap(dict):
        def get(self, key, default=None):
            lookups[0] += 1
            return super().get(key, default)

    real = outputs._producers

    def counted(graph):
        maps[0] += 1
        return CountingMap(real(graph))

    monkeypatch.setattr(outputs, "_producers", counted)
    length = 6000
    path = write(chain_model(length), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert (model.output.kind, model.output.threshold) == ("binary", 0.5)
    assert maps[0] == 1
    assert lookups[0] <= 2 * (length + 2)  # a walk or two, each one look-up per node (not length ** 2)
    assert list(model.labels(np.array([[-3.0], [3.0]], dtype=np.float32))) == [0, 1]


def test_a_long_chain_from_a_non_probability_is_refused(tmp_path):
    path = write(chain_model(6000, first="Relu"), tmp_path / "m.onnx")
    with pytest.raises(CertifyError, match="--output-kind binary-probability"):
        load_model(path, device="cpu")


def test_graph_walks_do_not_recurse(tmp_path):
    """Nested subgraphs are walked with a stack: 25 levels (protobuf allows about 30) under a
    recursion limit set just above the current depth, which the recursive walk exceeded."""
    import inspect

    nested = nested_if_model(25)
    depth = len(inspect.stack())
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 20)
    try:
        graphs = list(onnx_file.graphs(nested.graph))
        tensors = list(onnx_file.all_tensors(nested))
        onnx_file.check_domains(nested)
    finally:
        sys.setrecursionlimit(limit)
    assert len(graphs) == 1 + 2 * 25
    assert [t.name for t in tensors] == ["condition"]
    path = save(nested, tmp_path / "m.onnx")
    x = pixels(5, 2)
    assert list(load_model(path, device="cpu").labels(x)) == list(x.argmax(axis=1))


# -- inputs whose shape is only known from the data --------------------------------------------------


@pytest.mark.parametrize("declare_output", [True, False])
def test_a_model_with_undeclared_image_size_settles_on_its_first_run(tmp_path, declare_output):
    path = (save if declare_output else write)(spatial_model(4, declare_output), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert model.num_classes == (4 if declare_output else None)
    brightness = np.array([0.05, 0.3, 0.55, 0.8], dtype=np.float32)
    x = np.broadcast_to(brightness[:, None, None], (4, 5, 6)).copy()
    expected = [0, 1, 2, 3]
    assert [r.prediction for r in certify(path, x)] == expected
    assert list(model.labels(x[:, None])) == expected
    assert model.num_classes == 4


def test_classifier_scores_whose_columns_are_not_the_labels_give_way_to_the_label(tmp_path):
    # Columns score the classes 0, 4, 7: the argmax of the scores would say 1 for class 4.
    coefficients = np.random.default_rng(0).normal(size=(4, 3))
    path = save(ml_classifier_model(coefficients, [0, 4, 7]), tmp_path / "m.onnx")
    model = load_model(path, device="cpu")
    assert (model.output.name, model.num_classes) == ("label", 8)
    x = pixels(12, 4)
    assert list(model.labels(x)) == list(np.array([0, 4, 7])[reference(x, coefficients, np.zeros(3))])
    with pytest.raises(CertifyError, match=r"scores the classes \[0, 4, 7\].*'label'") as raised:
        load_model(path, device="cpu", output_name="probabilities")
    one_line(raised)
