"""Chunked tensors: a flat float32 vector as a stream of byte chunks, and back, in bounded memory.

A tensor travels as little-endian IEEE-754 float32 bytes cut into chunks of at most
``chunk_bytes`` (1 MiB by default, a whole number of values). The sender reads each chunk
straight out of the array (no copy of the whole tensor); the receiver writes each chunk into a
preallocated float32 buffer of the announced size (:class:`TensorAssembler`) and hashes it as it
goes, so a 25-million-parameter model (100 MB) needs its own 100 MB and one chunk, never more.

The digest of a tensor is SHA-256 over its float32 little-endian bytes, in order: the envelope
of an update names the digest of its base model and of its payload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from fedwarden.wire.errors import WireError

DTYPE = np.dtype("<f4")
"""The wire's value type: little-endian float32."""
VALUE_BYTES = DTYPE.itemsize
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
DIGEST_BYTES = 32

F32 = npt.NDArray[np.float32]


def check_chunk_bytes(chunk_bytes: int) -> int:
    if not VALUE_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES or chunk_bytes % VALUE_BYTES:
        raise ValueError(
            f"chunk size must be a multiple of {VALUE_BYTES} bytes between {VALUE_BYTES} and "
            f"{MAX_CHUNK_BYTES} (4 MiB), got {chunk_bytes}"
        )
    return chunk_bytes


def as_wire_array(array: npt.ArrayLike) -> F32:
    """``array`` as a contiguous 1-D little-endian float32 vector (a view when it already is)."""
    return np.ascontiguousarray(np.asarray(array).reshape(-1), dtype=DTYPE)


def tensor_digest(array: npt.ArrayLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> bytes:
    """SHA-256 of the vector's float32 little-endian bytes (hashed chunk by chunk)."""
    h = hashlib.sha256()
    for _, data in iter_chunks(array, chunk_bytes):
        h.update(data)
    return h.digest()


def iter_chunks(
    array: npt.ArrayLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[tuple[int, memoryview]]:
    """``(offset in values, bytes)`` of each chunk of the vector; views into the array."""
    check_chunk_bytes(chunk_bytes)
    vector = as_wire_array(array)
    raw = vector.view(np.uint8).data
    for start in range(0, len(raw), chunk_bytes):
        yield start // VALUE_BYTES, raw[start : start + chunk_bytes]


class TensorAssembler:
    """Receives a vector of ``total`` float32 values chunk by chunk into a preallocated buffer.

    Chunks must arrive in order (each one's offset, when given, must be where the previous one
    ended). Refusals raise :class:`~fedwarden.wire.errors.WireError`:

    - ``malformed-chunk``: a chunk that is not a whole number of values, or out of order;
    - ``oversized``: a chunk larger than ``max_chunk_bytes``, or more values than announced;
    - ``truncated``: :meth:`finish` before all values arrived.

    Args:
        total: the number of values announced.
        out: a float32 buffer of ``total`` values to write into (e.g. a row of the round's
            update matrix); a new one is allocated when omitted.
        max_chunk_bytes: the largest chunk accepted.
    """

    def __init__(
        self, total: int, out: F32 | None = None, *, max_chunk_bytes: int = MAX_CHUNK_BYTES
    ) -> None:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        if out is None:
            out = np.empty(total, dtype=np.float32)
        if out.shape != (total,) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a contiguous float32 vector of {total} values")
        self.total = total
        self.max_chunk_bytes = max_chunk_bytes
        self.buffer = out
        self._bytes = out.view(np.uint8).data
        self._position = 0  # bytes written
        self._hash = hashlib.sha256()

    @property
    def received(self) -> int:
        """Values received so far."""
        return self._position // VALUE_BYTES

    @property
    def complete(self) -> bool:
        return self._position == len(self._bytes)

    def add(self, data: bytes | memoryview, offset: int | None = None) -> None:
        size = len(data)
        if size > self.max_chunk_bytes:
            raise WireError(
                "oversized",
                f"a chunk of {size} bytes exceeds the maximum of {self.max_chunk_bytes}",
            )
        if size % VALUE_BYTES:
            raise WireError(
                "malformed-chunk",
                f"a chunk of {size} bytes is not a whole number of float32 values",
            )
        if offset is not None and offset != self.received:
            raise WireError(
                "malformed-chunk",
                f"a chunk starts at value {offset}, expected {self.received} (out of order)",
            )
        end = self._position + size
        if end > len(self._bytes):
            raise WireError(
                "oversized",
                f"the stream carries more than the {self.total} values announced "
                f"({end // VALUE_BYTES} so far)",
            )
        self._bytes[self._position : end] = data
        self._hash.update(data)
        self._position = end

    def digest(self) -> bytes:
        """SHA-256 of the bytes received so far."""
        return self._hash.digest()

    def finish(self) -> F32:
        """The vector, once every announced value arrived; ``truncated`` otherwise."""
        if not self.complete:
            raise WireError(
                "truncated",
                f"the stream ended after {self.received} of the {self.total} values announced",
            )
        if not np.little_endian:  # pragma: no cover - the wire is little-endian
            self.buffer.byteswap(inplace=True)
        return self.buffer
