"""Conversion between a model's parameter arrays and one flat float32 vector, and the layout
(names and shapes) that relates the two."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


def flatten(arrays: Sequence[npt.ArrayLike], dtype: npt.DTypeLike = np.float32) -> FloatArray:
    """Concatenate the arrays, raveled in C order, into one vector of ``dtype``."""
    if len(arrays) == 0:
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])


def unflatten(vector: npt.ArrayLike, shapes: Sequence[tuple[int, ...]]) -> list[FloatArray]:
    """Split ``vector`` back into arrays of ``shapes``; the sizes must add up exactly."""
    flat = np.asarray(vector)
    if flat.ndim != 1:
        raise ValueError(f"unflatten expects a 1-D vector, got shape {flat.shape}")
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if sum(sizes) != flat.size:
        raise ValueError(
            f"vector has {flat.size} values but the shapes {list(shapes)} need {sum(sizes)}"
        )
    out: list[FloatArray] = []
    offset = 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return out


@dataclass(frozen=True)
class ParameterLayout:
    """The named tensors a flat parameter vector stands for, in order (C order within each).

    The wire and the pipeline see one float32 vector; a model file, an app and a person see
    named tensors. The layout is the bridge, and it is what an aggregator checks an initial
    model, a checkpoint or an app against before the first round.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError(
                f"a layout needs one shape per name: {len(self.names)} names, "
                f"{len(self.shapes)} shapes"
            )
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"tensor names must be unique; repeated: {', '.join(dup)}")
        for name, shape in zip(self.names, self.shapes, strict=True):
            if not name:
                raise ValueError("tensor names must not be empty")
            if any(int(s) < 0 for s in shape):
                raise ValueError(f"tensor {name!r} has a negative dimension: {shape}")

    @classmethod
    def of_arrays(cls, arrays: Sequence[npt.ArrayLike]) -> ParameterLayout:
        """The layout of a list of arrays, named by position (``"0"``, ``"1"``, ...), as a
        Flower ``NumPyClient``'s parameters are."""
        shapes = tuple(tuple(int(s) for s in np.shape(a)) for a in arrays)
        return cls(tuple(str(i) for i in range(len(shapes))), shapes)

    @classmethod
    def of_named(cls, named: Mapping[str, npt.ArrayLike]) -> ParameterLayout:
        """The layout of named arrays, in the mapping's order."""
        return cls(tuple(named), tuple(tuple(int(s) for s in np.shape(a)) for a in named.values()))

    @classmethod
    def single(cls, size: int, name: str = "params") -> ParameterLayout:
        """One flat tensor: a model known only by its size."""
        return cls((name,), ((int(size),),))

    @property
    def size(self) -> int:
        """The number of parameters, the length of the flat vector."""
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    def split(self, vector: npt.ArrayLike) -> dict[str, FloatArray]:
        """The flat vector as named tensors (views into it)."""
        return dict(zip(self.names, unflatten(vector, self.shapes), strict=True))

    def join(self, named: Mapping[str, npt.ArrayLike]) -> FloatArray:
        """Named tensors as the flat float32 vector; the names and shapes must match exactly."""
        missing = [n for n in self.names if n not in named]
        extra = [n for n in named if n not in self.names]
        if missing or extra:
            raise ValueError(
                "the tensors do not match the model's layout: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unexpected {', '.join(extra)}" if extra else "",
                    )
                    if part
                )
            )
        for name, shape in zip(self.names, self.shapes, strict=True):
            got = tuple(np.shape(named[name]))
            if got != shape:
                raise ValueError(f"tensor {name!r} has shape {got}, the model's is {shape}")
        return flatten([named[n] for n in self.names])

    def describe(self) -> str:
        """``"w: 64x10, b: 10"``: for error messages and logs."""
        return ", ".join(
            f"{n}: {'x'.join(str(s) for s in shape) or 'scalar'}"
            for n, shape in zip(self.names, self.shapes, strict=True)
        )

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-ready: name -> shape, in order."""
        return {n: list(s) for n, s in zip(self.names, self.shapes, strict=True)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[int]]) -> ParameterLayout:
        return cls(tuple(data), tuple(tuple(int(s) for s in shape) for shape in data.values()))
