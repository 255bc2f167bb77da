"""The noise streams (certifier.noise): exactly N(0, 1) per value, independent values, pairs,
chunks, phases and batches, x added where it belongs, and each stream's draws fixed for good.

The statistical tests draw a few million values with fixed seeds: they pass or fail the same
way on every run, and each fails on a plausible mistake in the stream (checked by hand with
mutants: half the angles' range, the radius without its factor 2, one angle for cosine and
sine, every chunk from the same bits, x added at the wrong offset).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import certifier
from certifier.engine import _PHASE_KEYS, _Job
from certifier.noise import CHUNK_PAIRS, NOISE_STREAM, NOISE_STREAMS, gaussian_views, standard_normal, stream_generator
from certifier.results import recorded_noise_stream
from certifier.sampling import ESTIMATION, SELECTION

from onnx_models import hyperplane_model, save


def generator(stream: int, *key: int) -> np.random.Generator:
    return stream_generator(np.random.SeedSequence(11, spawn_key=key), stream)


def draws(stream: int, count: int, batches: int = 4) -> np.ndarray:
    """``count`` values in all from several batches' generators, as the engine makes them."""
    size = count // batches
    return np.concatenate([standard_normal(generator(stream, b), (size,)) for b in range(batches)]).astype(np.float64)


@pytest.fixture(scope="module", params=NOISE_STREAMS, ids=lambda s: f"stream{s}")
def stream(request):
    return request.param


@pytest.fixture(scope="module")
def many(stream):
    return draws(stream, 2_000_000)


def test_values_are_standard_normal(many):
    assert stats.kstest(many, "norm").pvalue > 1e-4
    assert abs(many.mean()) < 0.003 and abs(many.std() - 1) < 0.003
    assert abs(stats.skew(many)) < 0.01 and abs(stats.kurtosis(many)) < 0.02
    # the tails, where certificates live: P(|Z| > 3) = 0.0027, P(|Z| > 4) = 6.3e-5
    for bound, share, spread in ((3, 0.0027, 0.0002), (4, 6.33e-5, 2.5e-5)):
        assert abs((np.abs(many) > bound).mean() - share) < spread


def test_the_two_values_of_a_pair_are_independent(stream):
    size = 4 * CHUNK_PAIRS + 1234  # several chunks and a part chunk
    values = standard_normal(generator(stream, 5), (size,)).astype(np.float64)
    pairs = size // 2
    cosine, sine = values[:pairs], values[pairs : 2 * pairs]
    assert abs(np.corrcoef(cosine, sine)[0, 1]) < 0.01
    assert abs(np.corrcoef(cosine**2, sine**2)[0, 1]) < 0.01
    # radius^2 / 2 is exponential, the angle uniform: what Box-Muller needs of its uniforms
    assert stats.kstest((cosine**2 + sine**2) / 2, "expon").pvalue > 1e-4
    assert stats.kstest(np.arctan2(sine, cosine), "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-4


def test_chunks_draw_fresh_values(stream):
    values = standard_normal(generator(stream, 6), (6 * CHUNK_PAIRS,)).astype(np.float64)
    chunks = values[: 3 * CHUNK_PAIRS].reshape(3, CHUNK_PAIRS)  # the cosines of three chunks
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert abs(np.corrcoef(chunks[a], chunks[b])[0, 1]) < 0.02
        assert abs(np.corrcoef(np.abs(chunks[a]), np.abs(chunks[b]))[0, 1]) < 0.02


def test_phases_inputs_and_batches_draw_independent_noise(tmp_path, stream):
    """The engine's generators: selection never shares draws with estimation, nor one input or batch
    with another; the same key always gives the same draws."""
    path = save(hyperplane_model([1.0, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.5)
    engine = run.engine((4,), n0=10, n=100, seed=3, noise_stream=stream)
    x = np.zeros(4, np.float32)

    def noise(phase, index=0, batch=0):
        rng = engine._rng(_Job(index, phase, 0, batch, 0, 50_000, x))
        return standard_normal(rng, (200_000,)).astype(np.float64)

    reference = noise(SELECTION)
    assert np.array_equal(reference, noise(SELECTION))
    for other in (noise(ESTIMATION), noise(SELECTION, index=1), noise(SELECTION, batch=1)):
        assert abs(np.corrcoef(reference, other)[0, 1]) < 0.01
        assert abs(np.corrcoef(reference**2, other**2)[0, 1]) < 0.01
    assert set(_PHASE_KEYS.values()) == {0, 1, 2, 3}


@pytest.mark.parametrize("shape", [(1001, 3, 5, 7), (3, 1, 28, 28), (1, 1), (7, 2), (2 * CHUNK_PAIRS + 3, 1)])
@pytest.mark.parametrize("broadcast", [True, False], ids=["one-input", "batch"])
def test_views_are_x_plus_sigma_times_the_same_draws(shape, broadcast, stream):
    """Views add x at the position of each value, whatever the batch's shape (odd sizes, views
    across chunk boundaries), to sigma times exactly the values standard_normal draws."""
    rng = np.random.default_rng(4)
    if broadcast:
        x = np.broadcast_to(rng.uniform(0, 1, (1, *shape[1:])).astype(np.float32), shape)
    else:
        x = rng.uniform(0, 1, shape).astype(np.float32)
    sigma = 0.37
    views = gaussian_views(x, sigma, generator(stream, 9))
    noise = standard_normal(generator(stream, 9), shape)
    assert views.shape == shape and views.dtype == np.float32
    np.testing.assert_allclose(views, x + np.float32(sigma) * noise, rtol=1e-6, atol=1e-6)


def test_stream_1_draws_what_it_always_drew():
    """Stream 1 is what certifier drew before streams were numbered: results files written then
    resume with it. These values were drawn by that code."""
    rng = stream_generator(np.random.SeedSequence(7, spawn_key=(3, 1, 0, 2)), 1)
    np.testing.assert_allclose(standard_normal(rng, (7,)), [
        -0.28279995918273926, -1.065151572227478, -0.14889033138751984, 0.6588022708892822,
        -0.020839445292949677, 0.6734814047813416, -1.4040517807006836], rtol=1e-5)
    rng = stream_generator(np.random.SeedSequence(7, spawn_key=(3, 1, 0, 2)), 1)
    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    views = gaussian_views(np.broadcast_to(x, (5, 1, 3, 4)), 0.5, rng).ravel()
    np.testing.assert_allclose(views[:6], [0.0033890758641064167, -0.4727373421192169, -0.16283831000328064,
                                           0.6296752691268921, -0.09794104099273682, -0.43723639845848083],
                               rtol=1e-5, atol=1e-6)
    assert abs(float(views.astype(np.float64).sum()) - 27.868687658105046) < 1e-4


def test_stream_2_draws_what_it_always_drew():
    """Stream 2's draws for a seed, fixed once it shipped: a change would give results files other
    views for the same seed (make a new stream instead)."""
    rng = stream_generator(np.random.SeedSequence(7, spawn_key=(3, 1, 0, 2)), 2)
    np.testing.assert_allclose(standard_normal(rng, (7,)), STREAM_2_DRAWS, rtol=1e-5)


STREAM_2_DRAWS = [-0.6368671655654907, 0.9465177059173584, 1.0239934921264648, 0.13096952438354492,
                  -2.3113436698913574, -0.3301236629486084, -1.8133468627929688]


def test_generators_outside_the_engine_draw_what_they_always_drew():
    """certify train, certify show and plugins' own generators: a seed gives what it gave before
    noise streams were numbered (stream 1's transform), so retraining with a seed gives the same model."""
    seed = np.random.SeedSequence(5)
    plain = gaussian_views(np.zeros((3, 40), np.float32), 0.5, np.random.Generator(np.random.PCG64(seed)))
    np.testing.assert_array_equal(plain, gaussian_views(np.zeros((3, 40), np.float32), 0.5,
                                                        stream_generator(seed, 1)))
    assert NOISE_STREAM == max(NOISE_STREAMS) == 2  # what the engine draws for new results files


def test_an_unknown_noise_stream_is_refused_in_one_line(tmp_path):
    path = save(hyperplane_model([1.0, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.5)
    for stream in (3, 0, "2", True):
        with pytest.raises(certifier.CertifyError) as refused:
            run.engine((4,), noise_stream=stream)
        assert "\n" not in str(refused.value) and "noise stream" in str(refused.value)
    assert run.engine((4,), noise_stream=None).noise_stream == NOISE_STREAM  # None: the newest
    with pytest.raises(ValueError):
        stream_generator(np.random.SeedSequence(1), 3)


def test_the_noise_stream_of_a_results_file(tmp_path):
    """What a resumed file was drawn with: its number, 1 without one, the newest for anything that
    is not a results file (opening it says what is wrong)."""
    def write(name, text):
        path = tmp_path / name
        path.write_text(text)
        return path

    assert recorded_noise_stream(tmp_path / "missing.jsonl") == NOISE_STREAM
    assert recorded_noise_stream(write("empty.jsonl", "")) == NOISE_STREAM
    assert recorded_noise_stream(tmp_path) == NOISE_STREAM
    assert recorded_noise_stream(write("old.jsonl", '{"type": "header", "seed": 1}\n{"type": "result"}\n')) == 1
    assert recorded_noise_stream(write("new.jsonl", '{"type": "header", "noise_stream": 2}\n')) == 2
    assert recorded_noise_stream(write("torn.jsonl", '{"type": "header", "no')) == NOISE_STREAM
    assert recorded_noise_stream(write("other.jsonl", '{"type": "result"}\n')) == NOISE_STREAM
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00\n")
    assert recorded_noise_stream(tmp_path / "binary.jsonl") == NOISE_STREAM
    cohen = write("old.tsv", "idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
    assert recorded_noise_stream(cohen, "cohen") == NOISE_STREAM  # no settings beside it
    write("old.tsv.header.json", '{"seed": 1}')
    assert recorded_noise_stream(cohen, "cohen") == 1
    write("old.tsv.header.json", '{"seed": 1, "noise_stream": 2}')
    assert recorded_noise_stream(cohen, "cohen") == 2


def test_a_stream_asked_for_is_recorded_and_a_file_of_another_is_not_resumed(tmp_path):
    """Python may ask for a stream (``noise_stream=1``): the header records it, a rerun asking
    for it resumes, and a file drawn with another stream is refused, never mixed."""
    path = save(hyperplane_model([1.0, 0, 0, 0], -0.5), tmp_path / "plane.onnx")
    run = certifier.load(path, plugin="rs", sigma=0.5)
    data = np.random.default_rng(0).uniform(0, 1, (3, 4)).astype(np.float32)
    output = tmp_path / "r.jsonl"
    settings = dict(n0=10, n=200, batch_size=64, seed=1, output=output)
    with run.job(data, noise_stream=1, limit=2, **settings) as job:
        first = [(r.prediction, r.radius) for r in job]
    assert job.header["noise_stream"] == 1 and recorded_noise_stream(output) == 1
    with run.job(data, **settings) as job:  # no stream asked for: the file's
        assert job.engine.noise_stream == 1
        rest = [(r.prediction, r.radius) for r in job]
    with run.job(data, noise_stream=1, n0=10, n=200, batch_size=64, seed=1) as job:
        assert [(r.prediction, r.radius) for r in job] == first + rest
    with pytest.raises(certifier.CertifyError, match="noise_stream 1 there, 2 now") as refused:
        with run.job(data, noise_stream=2, **settings) as job:
            list(job)
    assert "\n" not in str(refused.value)
