"""Bad-input drills, property-based (hypothesis): the config model, endpoint weight updates, the gate.

Each property states what must hold for *any* input, not for a few examples:

- ``parse_config`` on a mutated ``pipeline.yaml`` (wrong types, unknown keys, removed keys, out-of-range
  numbers, arbitrary text) returns a :class:`PipelineConfig` or raises :class:`ConfigError` with one line;
- ``LocalBackend.update_weights`` with arbitrary weight maps either applies valid weights or raises
  :class:`BackendError`, and the stored state is never all-zero, negative, non-finite or on unknown names;
- ``decide_promotion`` on arbitrary case rows decides promote/reject/inconclusive with a one-line reason and
  never promotes with fewer paired completed cases than required or an over-erroring challenger.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent_release.pipelines.backend_rules import canonical_json
from agent_release.pipelines.config import ConfigError, PipelineConfig, parse_config
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import BackendError, ModelSpec, VariantSpec
from agent_release.steps.decide_promotion import DecisionConfig, decide_promotion
from agent_release.steps.evaluation_records import CaseResult, EvaluationReport, VariantEvaluation

ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG: dict[str, Any] = yaml.safe_load((ROOT / "pipeline.yaml").read_text())

Path_ = tuple[str | int, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every key path of a YAML tree (mapping keys and list indices), parents before children."""
    found: list[Path_] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


PATHS = _paths(BASE_CONFIG)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1e309", "nan", "yes", "golden", "100", "cron(bad"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
mutations = st.lists(
    st.tuples(st.sampled_from(["replace", "delete", "add_key"]), st.sampled_from(PATHS), values),
    min_size=1,
    max_size=4,
)


def _mutate(data: Any, path: Path_, kind: str, value: Any) -> None:
    parent = data
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed or replaced this branch
    last = path[-1]
    try:
        if kind == "replace":
            parent[last] = value
        elif kind == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last]["unknown_key"] = value
        else:
            parent[last] = {"nested": value}
    except (KeyError, IndexError, TypeError):
        return


def _assert_one_line_config_error(text: str) -> PipelineConfig | None:
    try:
        return parse_config(text, source="drill.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.strip(), "empty message"
        assert "\n" not in message and "\r" not in message, message
        assert message.startswith("drill.yaml"), message
        return None


@given(mutations)
@example([("replace", ("decide",), {"\r": None})])  # a key holding a carriage return (found by this test)
@example([("add_key", ("evaluate",), 1), ("replace", ("agent",), {"a\nb": 1})])
@settings(max_examples=150, deadline=None)
def test_mutated_config_is_valid_or_one_line_config_error(changes: list[tuple[str, Path_, Any]]) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE_CONFIG))
    for kind, path, value in changes:
        _mutate(data, path, kind, value)
    config = _assert_one_line_config_error(yaml.safe_dump(data, allow_unicode=True))
    if config is not None:
        # Whatever was accepted obeys the model's own invariants.
        schedule = config.promote.schedule
        assert schedule[-1] == 100 and all(a < b for a, b in pairwise(schedule))
        assert config.evaluate.dataset in config.datasets
        assert PipelineConfig.model_validate(config.model_dump()) == config


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None)
def test_arbitrary_text_is_valid_or_one_line_config_error(text: str) -> None:
    _assert_one_line_config_error(text)


# -- weight updates ------------------------------------------------------------------------------------------

VARIANTS = ("champion", "challenger", "shadow")
weight_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.sampled_from([0.0, 0.0, 1.0, -0.0, 1e-300, 1e308]),
)
weight_maps = st.dictionaries(st.sampled_from([*VARIANTS, "ghost", ""]), weight_values, max_size=4)


def _spec(name: str, weight: float, shadow: bool = False) -> VariantSpec:
    model = ModelSpec(kind="python", options={"class_path": "unused.never:Loaded"})
    return VariantSpec(name=name, model=model, initial_weight=weight, shadow=shadow)


def _check_state(weights: Mapping[str, float], shadow: str = "shadow") -> None:
    assert set(weights) == set(VARIANTS), weights
    assert all(math.isfinite(w) and w >= 0 for w in weights.values()), weights
    assert any(w > 0 for name, w in weights.items() if name != shadow), f"all production weights 0: {weights}"


@given(st.lists(weight_maps, min_size=1, max_size=6))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_weight_updates_never_leave_an_invalid_endpoint(updates: list[dict[str, float]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = LocalBackend(Path(tmp))
        try:
            backend.deploy_endpoint(
                "ep", [_spec("champion", 1.0), _spec("challenger", 0.0), _spec("shadow", 1.0, shadow=True)]
            )
            expected = {"champion": 1.0, "challenger": 0.0, "shadow": 1.0}
            for update in updates:
                try:
                    state = backend.update_weights("ep", update)
                except BackendError as exc:
                    assert "\n" not in str(exc) and str(exc)
                else:
                    expected = {**expected, **{k: float(v) for k, v in update.items()}}
                    assert {v.name: v.current_weight for v in state.variants} == expected
                stored = backend.describe_endpoint("ep")
                assert stored is not None
                weights = {v.name: v.current_weight for v in stored.variants}
                assert weights == expected, "a refused update changed nothing"
                _check_state(weights)
        finally:
            backend.close()


# -- the gate ------------------------------------------------------------------------------------------------


@st.composite
def evaluations(draw: st.DrawFn) -> EvaluationReport:
    n_cases = draw(st.integers(1, 40))
    n_clusters = draw(st.integers(1, 8))
    repeats = draw(st.integers(1, 2))
    roles = draw(st.sampled_from([("champion", "challenger"), ("challenger",)]))
    rows = []
    for role in roles:
        error_p = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
        success_p = draw(st.floats(0, 1))
        for case in range(n_cases):
            for repeat in range(repeats):
                errored = draw(st.floats(0, 1)) < error_p
                ok = draw(st.floats(0, 1)) < success_p
                score = draw(st.sampled_from([None, 0.0 if errored else float(ok)]))
                rows.append(
                    CaseResult(
                        case_id=f"c{case}",
                        cluster=f"k{case % n_clusters}",
                        variant=role,
                        role=role,
                        repeat=repeat,
                        scores={"task_success": score if not errored else None},
                        error="TimeoutError: drill" if errored else None,
                        latency_s=None if errored else draw(st.floats(0.01, 5)),
                        cost=draw(st.floats(0, 0.01)),
                    )
                )
    variants = tuple(
        VariantEvaluation(
            variant=role, role=role, cases_expected=n_cases, cases_completed=0, cases_errored=0, retries=0
        )
        for role in roles
    )
    return EvaluationReport(
        dataset_name="drill",
        dataset_hash="sha256:drill",
        repeats=repeats,
        scorer_specs=(),
        variants=variants,
        rows=tuple(rows),
    )


gate_configs = st.builds(
    DecisionConfig,
    min_completed_cases=st.integers(1, 50),
    max_error_rate=st.floats(0, 1),
    min_improvement=st.floats(-0.5, 0.5),
    alpha=st.floats(0.01, 0.45),
    bootstrap_resamples=st.just(100),
)


def _completed(rows: list[CaseResult]) -> set[str]:
    return {r.case_id for r in rows if r.error is None}


@given(gate_configs, evaluations())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gate_never_promotes_on_too_little_or_too_erroneous_evidence(
    config: DecisionConfig, evaluation: EvaluationReport
) -> None:
    report = decide_promotion(config, evaluation)
    assert report.decision in ("promote", "reject", "inconclusive")
    # What the ledger records of it must hash: the audit's canonical JSON refuses NaN and infinity.
    canonical_json(report.model_dump(mode="json"))
    assert report.reason.strip() and "\n" not in report.reason
    challenger = evaluation.rows_for("challenger")
    champion = evaluation.rows_for("champion")
    challenger_error_rate = sum(r.error is not None for r in challenger) / len(challenger)
    champion_error_rate = sum(r.error is not None for r in champion) / len(champion) if champion else 0.0
    if challenger_error_rate > config.max_error_rate:
        # Rejected, unless the champion failed as often: then the cause is shared and nothing is decided.
        expected = "inconclusive" if champion_error_rate > config.max_error_rate else "reject"
        assert report.decision == expected, report.reason
    if report.decision == "promote":
        assert challenger_error_rate <= config.max_error_rate
        paired = _completed(challenger) & _completed(champion) if champion else _completed(challenger)
        assert len(paired) >= config.min_completed_cases, report.reason


@pytest.mark.parametrize("bad", [{"promote": {"schedule": []}}, {"evaluate": {"dataset": "missing"}}])
def test_known_bad_mutations_are_refused(bad: dict[str, Any]) -> None:
    """Sanity for the generator: mutations the model must refuse are refused with a one-line message."""
    data = yaml.safe_load(yaml.safe_dump(BASE_CONFIG))
    for section, change in bad.items():
        data[section].update(change)
    assert _assert_one_line_config_error(yaml.safe_dump(data)) is None
