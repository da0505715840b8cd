"""The counts and times that the benchmark pages state in prose are those of the JSON beside them
(the tables are generated from it; the prose is written by hand and went stale before)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _json(name: str) -> Any:
    return json.loads((BENCHMARKS / name).read_text())


def _stated(page: str, pattern: str) -> tuple[int, ...]:
    match = re.search(pattern, (BENCHMARKS / page).read_text())
    assert match, f"{page} no longer says {pattern!r}: update this test with it"
    return tuple(int(group) for group in match.groups())


def test_the_index_counts_the_matrix_and_the_seeds() -> None:
    matrix, seeds = _json("defence-matrix.json"), _json("backdoor-seeds.json")
    stated = _stated("README.md", r"(\d+) defences × (\d+) attacks .*? over (\d+) seeds")
    config = matrix["config"]
    counts = (len(config["defences"]), len(config["attacks"]), len(seeds["config"]["seeds"]))
    assert stated == counts


def test_the_aggregator_run_took_what_its_json_says() -> None:
    (seconds,) = _stated("README.md", r"The run below took (\d+) s\.")
    assert seconds == round(_json("aggregators.json")["elapsed_seconds"])


def test_the_matrix_run_took_what_its_json_says() -> None:
    (seconds,) = _stated("defence-matrix.md", r"the published run took (\d+) s")
    assert seconds == round(_json("defence-matrix.json")["seconds"])
