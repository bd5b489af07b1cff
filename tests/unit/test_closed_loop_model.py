"""benchmarks/closed_loop_model.py: the simulation meets the loop's exact limits at both ends."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

MODEL_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "closed_loop_model.py"


@pytest.fixture(scope="module")
def model() -> ModuleType:
    spec = importlib.util.spec_from_file_location("closed_loop_model", MODEL_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("calls", "cases"), [(1, 160), (2, 160), (1, 17)])
def test_no_work_in_our_process_is_whole_waves_of_endpoint_calls(
    model: ModuleType, calls: int, cases: int
) -> None:
    waves = math.ceil(cases / 16)
    assert model.loop_seconds(cases, 0.0, calls) == pytest.approx(waves * calls * 0.2515)


def test_a_saturated_process_runs_at_its_own_pace(model: ModuleType) -> None:
    # 100 ms of GIL work per case is far beyond what 16 slots of 251.5 ms can hide: the GIL is the bottleneck,
    # so the loop takes the total work (+-50% per chunk averages out) plus at most one case's calls.
    seconds = model.loop_seconds(160, 100.0, 1)
    assert 16.0 * 0.9 <= seconds <= 16.0 * 1.1 + 0.2515


def test_the_ratio_falls_as_the_work_per_case_grows(model: ModuleType) -> None:
    for workload in ("W1", "W2"):
        ratios = [model.ratio_to_ideal(workload, 160, gil_ms) for gil_ms in (0, 4, 8, 12, 16)]
        assert ratios == sorted(ratios, reverse=True)
        assert ratios[0] == pytest.approx(250 / 251.5, abs=1e-9)  # whole waves, each 1.5 ms over 250


def test_the_budget_is_the_edge_where_the_target_is_still_met(model: ModuleType) -> None:
    most = model.most_gil_ms("W1", 160, 0.9, 0.0)
    assert model.ratio_to_ideal("W1", 160, most, 0.0) >= 0.9
    assert model.ratio_to_ideal("W1", 160, most + 0.2, 0.0) < 0.9
    # A fixed cost outside the loop leaves less room per case; an unreachable target leaves none.
    assert model.most_gil_ms("W1", 160, 0.9, 0.2) < most
    assert model.most_gil_ms("W1", 160, 0.999, 0.0) == 0.0
