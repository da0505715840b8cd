"""The checked-in generated code is what grpc_tools.protoc makes of fedwarden.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ("fedwarden_pb2.py", "fedwarden_pb2.pyi", "fedwarden_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-Ioperator",
            f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}",
            "operator/fedwarden/wire/fedwarden.proto",
        ],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in GENERATED:
        fresh = (tmp_path / "fedwarden" / "wire" / name).read_text()
        current = (ROOT / "operator" / "fedwarden" / "wire" / name).read_text()
        assert fresh == current, f"{name} is out of date: make generate"
