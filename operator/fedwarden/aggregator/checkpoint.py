"""Atomic checkpoints of the aggregator's state after each round.

One file, ``checkpoint.npz`` in the checkpoint directory, holds everything a restart needs:
the global model, the number of rounds completed, :meth:`Pipeline.state_dict` (accountant
history, strikes and bans, clipping norm, free-rider memory), the certificates revoked for
bans, the nonces of recent envelopes, each client's fate, the last round's report and, once the
training ended, how it ended.

Writing is atomic: the file is written to a temporary file in the same directory, flushed and
fsynced, renamed over the previous checkpoint with ``os.replace`` and the directory fsynced. A
reader (a restarted aggregator) sees the previous checkpoint or the new one, never a mixture.

Why this makes ``kill -9`` safe: the aggregator runs the pipeline (which steps the accountant in
memory), writes the checkpoint of the post-round state, and only then serves the new model and
reports the round. A crash before the rename loses the round's in-memory state, including its
accountant step; no one has seen its model, so no privacy was spent, and the restart redoes the
round. After the rename the round is done and is never run again. So ε never goes down and no
round counts twice.

The format is an ``.npz`` (a zip of ``.npy`` arrays, loaded with ``allow_pickle=False``): the
model and the arrays in the pipeline state are arrays, the rest is JSON in the ``meta`` entry
with arrays referenced by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT = "fedwarden.checkpoint/v1"
FILENAME = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or belongs to another training or model."""


class PrivacyStateLostError(CheckpointError):
    """No checkpoint, though a durable record shows privacy budget spent: the accountant's
    state is lost, and starting it afresh would spend the budget again."""


@dataclass
class Checkpoint:
    """The aggregator's state after ``round`` completed rounds."""

    training_uid: str
    round: int
    model: npt.NDArray[np.float32]
    pipeline: dict[str, Any]
    revocations: list[dict[str, Any]] = field(default_factory=list)
    nonces: dict[int, list[str]] = field(default_factory=dict)
    """round -> hex nonces of the envelopes seen in it (recent rounds only)."""
    fates: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_round: dict[str, Any] | None = None
    """The last round's report (``RoundFinished.to_dict()``)."""
    finished: dict[str, Any] | None = None
    """``{"status": ..., "message": ...}`` once the training ended."""
    extra: dict[str, Any] = field(default_factory=dict)


# --- JSON with arrays -------------------------------------------------------------------------


def _encode(value: Any, arrays: dict[str, np.ndarray[Any, Any]]) -> Any:
    if isinstance(value, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"__array__": name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, arrays) for k, v in value.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _decode(value: Any, arrays: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.array(arrays[value["__array__"]])
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, arrays) for v in value["__tuple__"])
        if set(value) == {"__items__"}:
            return {_decode(k, arrays): _decode(v, arrays) for k, v in value["__items__"]}
        return {k: _decode(v, arrays) for k, v in value.items()}
    return value


# --- writing and reading ----------------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: Path | str, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` atomically as ``directory/checkpoint.npz``; return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    meta = {
        "format": FORMAT,
        "training_uid": checkpoint.training_uid,
        "round": checkpoint.round,
        "num_parameters": int(checkpoint.model.size),
        "pipeline": _encode(checkpoint.pipeline, arrays),
        "revocations": _encode(checkpoint.revocations, arrays),
        "nonces": {str(k): v for k, v in checkpoint.nonces.items()},
        "fates": _encode(checkpoint.fates, arrays),
        "last_round": _encode(checkpoint.last_round, arrays),
        "finished": checkpoint.finished,
        "extra": _encode(checkpoint.extra, arrays),
    }
    meta_bytes = json.dumps(meta, sort_keys=True).encode("utf-8")
    final = directory / FILENAME
    fd, tmp_name = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            payload: dict[str, Any] = {
                **arrays,
                "model": np.ascontiguousarray(checkpoint.model, dtype=np.float32),
                "meta": np.frombuffer(meta_bytes, dtype=np.uint8),
            }
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(directory)
    return final


def remove_stale_temporaries(directory: Path | str) -> int:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    removed = 0
    for tmp in Path(directory).glob(".checkpoint.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def load_checkpoint(directory: Path | str) -> Checkpoint | None:
    """The checkpoint in ``directory``, or ``None`` when there is none.

    Raises :class:`CheckpointError` when the file exists but cannot be read.
    """
    path = Path(directory) / FILENAME
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            if meta.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path}: unknown checkpoint format {meta.get('format')!r} "
                    f"(this version reads {FORMAT})"
                )
            arrays = {name: data[name] for name in data.files if name not in ("meta",)}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path} cannot be read: {_describe(exc)}") from exc
    try:
        return Checkpoint(
            training_uid=str(meta["training_uid"]),
            round=int(meta["round"]),
            model=np.array(arrays["model"], dtype=np.float32),
            pipeline=_decode(meta["pipeline"], arrays),
            revocations=_decode(meta["revocations"], arrays),
            nonces={int(k): list(v) for k, v in meta["nonces"].items()},
            fates=_decode(meta["fates"], arrays),
            last_round=_decode(meta["last_round"], arrays),
            finished=meta.get("finished"),
            extra=_decode(meta.get("extra", {}), arrays),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not a valid checkpoint: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """An exception as one line for a user: a KeyError's bare key names what is missing."""
    if isinstance(exc, KeyError):
        return f"{exc.args[0]!r} is missing"
    return str(exc)
