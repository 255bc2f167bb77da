"""Fast exact-in-distribution Gaussian noise for the hot path.

numpy's ziggurat draws float32 normals at about 7 ns each on these machines, as much
as a small model spends per pixel. Box-Muller with numpy's vectorized float32
log/sin/cos is several times faster. The radius uses 53-bit uniforms, so the largest
normal it can produce is 9.1 sigma: the Gaussian mass it cannot reach is below 1e-16
per coordinate. The angle uses 24-bit uniforms, as numpy's float32 ``random`` does.

Which views a seed gives is a *noise stream*; results files record its number, so a
run resumes with the stream its file was written with:

* stream 1: every batch's generator is PCG64; all radius uniforms are drawn, then all
  angles (numpy's float32 ``random``), and the whole batch goes through Box-Muller at once.
* stream 2 (``NOISE_STREAM``): every batch's generator is SFC64 (numpy's fastest bit
  generator); the batch is drawn in chunks of ``CHUNK_PAIRS`` pairs small enough to stay
  in the CPU's cache, each chunk's radius uniforms (``random``), then its angles (24 bits
  of each 32-bit half of ``random_raw``, low half first), then its pairs.

Both are the same transform of uniforms of the same precision: only which bits go where
differs. A generator that is not the engine's (``certify train``'s, ``certify show``'s, a
test's) draws as stream 1 did, so that what a seed gives there has not changed either.
"""

from __future__ import annotations

import threading

import numpy as np

_TWO_PI = np.float32(2.0 * np.pi)
_TINY = np.float32(2.0**-60)
#: The largest |sample| standard_normal can return (the radius at U = _TINY, in its own float32
#: steps; cos and sin are at most 1): settings are checked against it (plugins/semantic.py).
LARGEST_STANDARD_NORMAL = float(np.sqrt(np.log(_TINY) * np.float32(-2.0)))

#: the noise stream new runs draw (see the module's docstring)
NOISE_STREAM = 2
#: the noise streams this version can draw; results files without a number were written with 1
NOISE_STREAMS = (1, 2)
#: stream 2 makes this many pairs of normals at a time: part of the stream's definition, never change it
CHUNK_PAIRS = 1 << 15
_ANGLE_STEP = np.float32(2.0 * np.pi / 2**24)
_scratch = threading.local()


class _Stream1Generator(np.random.Generator):
    noise_stream = 1


class _Stream2Generator(np.random.Generator):
    noise_stream = 2


def stream_generator(seed: np.random.SeedSequence, stream: int = NOISE_STREAM) -> np.random.Generator:
    """The numpy Generator of one batch's views in noise stream ``stream``, seeded by ``seed``."""
    if stream == 1:
        return _Stream1Generator(np.random.PCG64(seed))
    if stream == 2:
        return _Stream2Generator(np.random.SFC64(seed))
    raise ValueError(f"noise stream {stream!r} is not one of {NOISE_STREAMS}")


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 standard normal samples of ``shape`` (Box-Muller)."""
    return _normal(rng, shape, None, None)


def gaussian_views(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """x + N(0, sigma^2 I), float32, for a batch x."""
    return _normal(rng, x.shape, sigma, x)


def _normal(rng, shape, sigma, x) -> np.ndarray:
    if getattr(rng, "noise_stream", 1) == 1:
        noisy = _stream1_standard_normal(rng, shape)
        if sigma is not None:
            noisy *= np.float32(sigma)
            noisy += x
        return noisy
    return _stream2_normal(rng, shape, sigma, x)


def _stream1_standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    half = (size + 1) // 2
    # -2 log(U) with U in (0, 1): 53-bit uniforms keep the far tail.
    radius = rng.random(half, dtype=np.float64).astype(np.float32)
    np.maximum(radius, _TINY, out=radius)
    np.log(radius, out=radius)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    out = np.empty(2 * half, dtype=np.float32)
    angle = rng.random(half, dtype=np.float32, out=out[half:])
    angle *= _TWO_PI
    np.cos(angle, out=out[:half])
    np.sin(angle, out=out[half:])
    out[:half] *= radius
    out[half:] *= radius
    return out[:size].reshape(shape)


def _buffer(name: str, size: int, dtype) -> np.ndarray:
    """A scratch array of this thread's, reused from call to call (no fresh pages per chunk)."""
    buffer = getattr(_scratch, name, None)
    if buffer is None or len(buffer) < size:
        buffer = np.empty(max(size, CHUNK_PAIRS), dtype=dtype)
        setattr(_scratch, name, buffer)
    return buffer[:size]


def _stream2_normal(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | None,
                    x: np.ndarray | None) -> np.ndarray:
    """Values 0..pairs-1 are radius * cos(angle) of pair i, values pairs.. radius * sin(angle); with
    ``x``, x + sigma * those, made chunk by chunk while the chunk is in cache."""
    size = int(np.prod(shape))
    pairs = (size + 1) // 2
    out = np.empty(2 * pairs, dtype=np.float32)
    add_x = _flat_source(x, shape) if x is not None else None
    for start in range(0, pairs, CHUNK_PAIRS):
        count = min(CHUNK_PAIRS, pairs - start)
        # -2 log(U) with U in (0, 1): 53-bit uniforms keep the far tail.
        uniform = rng.random(count, dtype=np.float64, out=_buffer("uniform", count, np.float64))
        radius = _buffer("radius", count, np.float32)
        radius[...] = uniform
        np.maximum(radius, _TINY, out=radius)
        np.log(radius, out=radius)
        radius *= np.float32(-2.0)
        np.sqrt(radius, out=radius)
        if sigma is not None:
            radius *= np.float32(sigma)
        # 24-bit angles from each 32-bit half of the raw 64-bit draws, low half first
        bits = rng.bit_generator.random_raw((count + 1) // 2).astype("<u8", copy=False).view("<u4")[:count]
        bits >>= 8
        cosine, sine = out[start : start + count], out[pairs + start : pairs + start + count]
        sine[...] = bits  # exact: below 2^24
        sine *= _ANGLE_STEP
        np.cos(sine, out=cosine)
        np.sin(sine, out=sine)
        cosine *= radius
        sine *= radius
        if add_x is not None:
            cosine += add_x(start, count)
            last = min(count, size - pairs - start)  # with an odd size the final sine is not used
            if last > 0:
                sine[:last] += add_x(pairs + start, last)
    return out[:size].reshape(shape)


def _flat_source(x: np.ndarray, shape: tuple[int, ...]):
    """A function giving x's values at flat positions [start, start + count) of a batch of ``shape``."""
    x = np.asarray(x)
    if x.ndim > 1 and x.strides[0] == 0 and x.size:  # one input broadcast over the batch (the engine's views)
        one = np.ascontiguousarray(x[0]).reshape(-1)
        width = len(one)
        tiled = np.tile(one, -(-min(CHUNK_PAIRS, int(np.prod(shape))) // width) + 1)
        return lambda start, count: tiled[start % width : start % width + count]
    flat = np.ascontiguousarray(np.broadcast_to(x, shape)).reshape(-1)
    return lambda start, count: flat[start : start + count]
