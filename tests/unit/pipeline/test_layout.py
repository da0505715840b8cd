"""ParameterLayout: named tensors <-> the flat vector the wire and the pipeline carry."""

from __future__ import annotations

import numpy as np
import pytest

from fedwarden.pipeline import ParameterLayout


def test_split_and_join_round_trip_in_order() -> None:
    layout = ParameterLayout(("w", "b"), ((3, 2), (2,)))
    vector = np.arange(8, dtype=np.float32)
    named = layout.split(vector)
    assert list(named) == ["w", "b"]
    np.testing.assert_array_equal(named["w"], [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(named["b"], [6, 7])
    np.testing.assert_array_equal(layout.join({"b": named["b"], "w": named["w"]}), vector)
    assert layout.size == 8
    assert layout.describe() == "w: 3x2, b: 2"


def test_join_names_what_does_not_match() -> None:
    layout = ParameterLayout(("w", "b"), ((3, 2), (2,)))
    with pytest.raises(ValueError, match="missing b; unexpected c"):
        layout.join({"w": np.zeros((3, 2)), "c": np.zeros(2)})
    with pytest.raises(ValueError, match=r"tensor 'w' has shape \(2, 3\), the model's is \(3, 2\)"):
        layout.join({"w": np.zeros((2, 3)), "b": np.zeros(2)})


def test_layouts_of_arrays_named_and_single() -> None:
    arrays = [np.zeros((2, 2)), np.zeros(3), np.float32(1.0)]
    assert ParameterLayout.of_arrays(arrays) == ParameterLayout(("0", "1", "2"), ((2, 2), (3,), ()))
    assert ParameterLayout.of_named({"a": np.zeros(4)}).to_dict() == {"a": [4]}
    assert ParameterLayout.single(5).size == 5
    layout = ParameterLayout(("x", "scalar"), ((2, 2), ()))
    assert ParameterLayout.from_dict(layout.to_dict()) == layout
    assert layout.size == 5


def test_invalid_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="repeated: a"):
        ParameterLayout(("a", "a"), ((1,), (1,)))
    with pytest.raises(ValueError, match="one shape per name"):
        ParameterLayout(("a",), ())
