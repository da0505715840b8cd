"""Named tensors in files: ``.safetensors`` (read and written) and ``.npz`` (read).

The aggregator's ``--initial-model`` and ``fedwarden model verify`` read model files here, and
the export writes one. Every error is a :class:`ModelFileError` whose message is one line naming
the file and what is wrong with it: not a file, an unknown suffix, a corrupt header, a tensor
that is not floating point or holds NaN or Inf, or tensors that do not match the model's layout.

``.npz`` files are read with ``allow_pickle=False``: an object array (which would need pickle,
and so could run code) is refused as a non-float tensor.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors_bytes
from safetensors.numpy import save as save_safetensors_bytes

from fedwarden.pipeline import ParameterLayout

SUFFIXES = (".safetensors", ".npz")
_ZIP_MAGIC = b"PK\x03\x04"

NamedTensors = dict[str, npt.NDArray[np.floating[Any]]]


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the cause."""


def read_tensors(path: Path | str) -> NamedTensors:
    """The named floating-point tensors of a ``.safetensors`` or ``.npz`` file, in file order."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ModelFileError(
            f"{path}: unknown model file type {path.suffix or '(no suffix)'!r}; "
            f"use {' or '.join(SUFFIXES)}"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if path.suffix == ".safetensors":
        tensors = parse_safetensors(data, str(path))
    else:
        tensors = _npz(path, data)
    return check_tensors(tensors, str(path))


def parse_safetensors(data: bytes, source: str = "model") -> NamedTensors:
    """The tensors in the bytes of a ``.safetensors`` file (unchecked: :func:`check_tensors`)."""
    try:
        loaded = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ModelFileError(
            f"{source}: not a valid safetensors file ({_first_line(exc)})"
        ) from None
    order = _recorded_order(data)
    if order is not None and sorted(order) == sorted(loaded):
        return {name: loaded[name] for name in order}
    return dict(loaded)


ORDER_KEY = "fedwarden.order"
"""The ``.safetensors`` metadata key that records the tensors' order (a JSON list of names).

A safetensors file does not keep the order its tensors were given in (it lays them out by dtype
and name), while the flat parameter vector does: without this, an app's initial model read back
from a file would be flattened in another order than the app's, and every party would cut the
same vector into different tensors."""


def _recorded_order(data: bytes) -> list[str] | None:
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        order = json.loads(header.get("__metadata__", {}).get(ORDER_KEY, "null"))
    except (ValueError, AttributeError, TypeError):
        return None
    if isinstance(order, list) and all(isinstance(n, str) for n in order):
        return order
    return None


def _npz(path: Path, data: bytes) -> NamedTensors:
    # np.load guesses the format from the first bytes and would take anything else for a
    # pickle (refused, but with a message about pickles): only a zip archive is an .npz
    if not data.startswith(_ZIP_MAGIC):
        raise ModelFileError(f"{path}: not a valid .npz archive (not a zip file)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            tensors: NamedTensors = {}
            for name in archive.files:
                try:
                    tensors[name] = archive[name]
                except ValueError:  # an object array: loading it would unpickle
                    raise ModelFileError(
                        f"{path}: array {name!r} holds Python objects, not numbers"
                    ) from None
            return tensors
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ModelFileError(f"{path}: not a valid .npz archive ({_first_line(exc)})") from None


def check_tensors(tensors: Mapping[str, np.ndarray[Any, Any]], source: str) -> NamedTensors:
    """``tensors`` if every one is a finite floating-point array; else a one-line error."""
    if not tensors:
        raise ModelFileError(f"{source}: holds no tensors")
    checked: NamedTensors = {}
    for name, array in tensors.items():
        if array.dtype.kind != "f":
            raise ModelFileError(
                f"{source}: tensor {name!r} is {array.dtype}, not floating point; "
                "a model's parameters are float16, float32 or float64"
            )
        if not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise ModelFileError(f"{source}: tensor {name!r} holds {bad} NaN or Inf values")
        checked[name] = array
    return checked


def check_layout(tensors: Mapping[str, np.ndarray[Any, Any]], layout: ParameterLayout) -> None:
    """Return when ``tensors`` are exactly the layout's names and shapes; else say which differ."""
    missing = [n for n in layout.names if n not in tensors]
    unexpected = [n for n in tensors if n not in layout.names]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        if name in tensors and tuple(tensors[name].shape) != shape:
            problems.append(
                f"{name!r} has shape {_shape(tensors[name].shape)}, the model's is {_shape(shape)}"
            )
    if problems:
        raise ModelFileError(
            f"the tensors do not match the model's layout ({layout.size} parameters: "
            f"{layout.describe()}): {'; '.join(problems)}"
        )


def layout_vector(
    tensors: Mapping[str, np.ndarray[Any, Any]], layout: ParameterLayout
) -> npt.NDArray[np.floating[Any]]:
    """The flat float32 parameter vector of ``tensors`` in ``layout``'s order (checked)."""
    check_layout(tensors, layout)
    return layout.join(tensors)


def safetensors_bytes(
    vector: npt.ArrayLike, layout: ParameterLayout, metadata: Mapping[str, str] | None = None
) -> bytes:
    """The flat ``vector`` as a ``.safetensors`` file of ``layout``'s named float32 tensors."""
    flat = np.asarray(vector, dtype=np.float32)
    if flat.ndim != 1 or flat.size != layout.size:
        raise ValueError(
            f"a model of {flat.size} values does not fit the layout of {layout.size} parameters"
        )
    named = {n: np.ascontiguousarray(t) for n, t in layout.split(flat).items()}
    recorded = {ORDER_KEY: json.dumps(list(named)), **dict(metadata or {})}
    return bytes(save_safetensors_bytes(named, metadata=recorded))


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape) or "scalar"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
