"""Reading named tensors from .safetensors and .npz files, and checking them against a layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from fedwarden.model import (
    ModelFileError,
    check_layout,
    layout_vector,
    parse_safetensors,
    read_tensors,
    safetensors_bytes,
)
from fedwarden.pipeline import ParameterLayout

LAYOUT = ParameterLayout(("w", "b"), ((2, 3), (3,)))


def test_safetensors_round_trip_keeps_names_and_shapes(tmp_path: Path) -> None:
    vector = np.arange(9, dtype=np.float32)
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors_bytes(vector, LAYOUT))
    tensors = read_tensors(path)
    assert {n: t.shape for n, t in tensors.items()} == {"w": (2, 3), "b": (3,)}
    np.testing.assert_array_equal(layout_vector(tensors, LAYOUT), vector)


def test_a_written_model_is_read_back_in_its_layout_order() -> None:
    # safetensors lays tensors out by dtype and name; the flat vector is in the layout's order
    # (a PyTorch state_dict's: conv1.weight before conv1.bias), and reading must give it back,
    # or an initial model from `fedwarden model init` is flattened in another order than the app's
    layout = ParameterLayout(
        ("fc.weight", "conv.weight", "conv.bias", "fc.bias"), ((2, 2), (3,), (1,), (2,))
    )
    vector = np.arange(layout.size, dtype=np.float32)
    tensors = parse_safetensors(safetensors_bytes(vector, layout))
    assert list(tensors) == list(layout.names)
    np.testing.assert_array_equal(ParameterLayout.of_named(tensors).join(tensors), vector)


def test_npz_of_named_arrays_is_read(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    np.savez(path, w=np.ones((2, 3), np.float64), b=np.zeros(3, np.float32))
    tensors = read_tensors(path)
    assert sorted(tensors) == ["b", "w"]
    assert layout_vector(tensors, LAYOUT).dtype == np.float32


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.pt", b"x", "unknown model file type '.pt'"),
        ("m.safetensors", b"\xff" * 12, "not a valid safetensors file"),
        ("m.npz", b"not a zip", "not a valid .npz archive"),
    ],
)
def test_bad_files_fail_in_one_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message) as info:
        read_tensors(path)
    assert "\n" not in str(info.value)


def test_a_directory_or_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(ModelFileError, match="is a directory"):
        read_tensors(tmp_path / "d.npz")
    with pytest.raises(ModelFileError, match="no such file"):
        read_tensors(tmp_path / "absent.safetensors")


def test_integer_and_non_finite_tensors_are_refused(tmp_path: Path) -> None:
    ints = tmp_path / "ints.safetensors"
    save_file({"w": np.ones((2, 3), np.int32)}, str(ints))
    with pytest.raises(ModelFileError, match="'w' is int32, not floating point"):
        read_tensors(ints)
    nan = tmp_path / "nan.npz"
    np.savez(nan, w=np.array([1.0, np.nan, np.inf]))
    with pytest.raises(ModelFileError, match="'w' holds 2 NaN or Inf values"):
        read_tensors(nan)


def test_object_arrays_in_npz_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="'w' holds Python objects"):
        read_tensors(path)


def test_layout_mismatch_names_each_difference() -> None:
    tensors = {"w": np.zeros((3, 2), np.float32), "extra": np.zeros(1, np.float32)}
    with pytest.raises(ModelFileError) as info:
        check_layout(tensors, LAYOUT)
    message = str(info.value)
    assert "missing b" in message
    assert "unexpected extra" in message
    assert "'w' has shape 3x2, the model's is 2x3" in message


def test_a_vector_of_the_wrong_size_does_not_fit_the_layout() -> None:
    with pytest.raises(ValueError, match="8 values does not fit the layout of 9"):
        safetensors_bytes(np.zeros(8), LAYOUT)


def test_parse_safetensors_reads_bytes() -> None:
    data = safetensors_bytes(np.ones(9), LAYOUT, {"round": "3"})
    assert parse_safetensors(data)["b"].tolist() == [1.0, 1.0, 1.0]
