"""Chunked tensors: round trips, refusals, digests, and bounded memory for 25M parameters."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest

from fedwarden.wire import (
    DEFAULT_CHUNK_BYTES,
    TensorAssembler,
    WireError,
    check_chunk_bytes,
    iter_chunks,
    tensor_digest,
)


def test_round_trip_in_order_with_offsets() -> None:
    values = np.arange(1000, dtype=np.float32) / 7
    out = TensorAssembler(1000)
    for offset, data in iter_chunks(values, 64):
        out.add(data, offset)
    assert out.complete
    np.testing.assert_array_equal(out.finish(), values)
    assert out.digest() == tensor_digest(values) == hashlib.sha256(values.tobytes()).digest()


def test_chunks_are_views_and_little_endian() -> None:
    values = np.array([1.0, -2.5], dtype=">f4")  # big-endian input is converted
    ((offset, data),) = list(iter_chunks(values, 8))
    assert offset == 0
    assert bytes(data) == np.array([1.0, -2.5], dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("chunks", "reason"),
    [
        ([b"\x00" * 6], "malformed-chunk"),  # not whole float32 values
        ([b"\x00" * 44], "oversized"),  # more than the 10 announced
        ([b"\x00" * 8, b"\x00" * 8], "truncated"),  # 4 of 10 values, then the end
    ],
)
def test_refusals(chunks: list[bytes], reason: str) -> None:
    out = TensorAssembler(10)

    def feed() -> None:
        for chunk in chunks:
            out.add(chunk)
        out.finish()

    with pytest.raises(WireError) as info:
        feed()
    assert info.value.reason == reason


def test_out_of_order_and_too_large_chunks() -> None:
    out = TensorAssembler(10, max_chunk_bytes=16)
    with pytest.raises(WireError, match="out of order") as info:
        out.add(b"\x00" * 8, offset=4)
    assert info.value.reason == "malformed-chunk"
    with pytest.raises(WireError, match="exceeds the maximum") as info:
        out.add(b"\x00" * 20)
    assert info.value.reason == "oversized"  # not retryable: the client is settled


def test_writes_into_a_given_row() -> None:
    matrix = np.zeros((2, 4), np.float32)
    out = TensorAssembler(4, matrix[1])
    out.add(np.ones(4, np.float32).tobytes())
    out.finish()
    np.testing.assert_array_equal(matrix, [[0, 0, 0, 0], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="contiguous float32"):
        TensorAssembler(4, np.zeros(5, np.float32))


def test_chunk_size_limits() -> None:
    assert check_chunk_bytes(DEFAULT_CHUNK_BYTES) == DEFAULT_CHUNK_BYTES
    for bad in (0, 6, 8 << 20):
        with pytest.raises(ValueError, match="chunk size"):
            check_chunk_bytes(bad)


@pytest.mark.slow
def test_25m_parameters_stream_in_bounded_memory() -> None:
    """100 MB through 1 MiB chunks: besides the preallocated buffer, the receiver never holds
    more than a chunk or so."""
    n = 25_000_000
    source = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    target = np.empty(n, np.float32)
    tracemalloc.start()
    try:
        out = TensorAssembler(n, target)
        for offset, data in iter_chunks(source, DEFAULT_CHUNK_BYTES):
            out.add(bytes(data), offset)  # bytes(): what a protobuf message hands over
        result = out.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result is target
    assert out.digest() == tensor_digest(source)
    np.testing.assert_array_equal(result[-5:], source[-5:])
    assert peak < 4 * DEFAULT_CHUNK_BYTES, f"peak {peak / 2**20:.1f} MiB"
