"""Config values that validate used to pass but cannot work: an unknown tracking URI scheme, absurd numbers,
and canary steps whose replayed traffic is too thin for the guards to judge (a warning)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from _shared.cli import assert_one_line_error, copy_project, run_cli
from _shared.pipeline_yaml import edit, line_of
from pydantic import ValidationError

from agent_release.pipelines.config import ConfigError, PipelineConfig, load_config, parse_config
from agent_release.pipelines.config_checks import check_config, config_warnings
from agent_release.pipelines.tracking import unsupported_tracking_uri
from agent_release.steps.evaluate_config import EvaluateConfig, PriceTable
from agent_release.steps.promote_config import PromotionConfig, thin_bakes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


# -- tracking.uri: MLflow decides which schemes work ----------------------------------------------------------


def test_unknown_tracking_scheme_is_a_config_error_naming_key_and_line(project: Path) -> None:
    edit(project, "  experiment: support-agent", "  uri: bogus://x\n  experiment: support-agent")
    with pytest.raises(ConfigError) as info:
        check_config(load_config(project / "pipeline.yaml"))
    message = str(info.value)
    assert f"pipeline.yaml:{line_of(project, 'uri: bogus')}: tracking.uri: 'bogus://x'" in message
    assert "scheme 'bogus'" in message and "sqlite" in message and "\n" not in message


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:1",
        "https://mlflow.example.com",
        "sqlite:////tmp/mlflow.db",
        "postgresql+psycopg2://user@host/db",
        "file:///tmp/mlruns",
        "/tmp/mlruns",
        "databricks",
    ],
)
def test_schemes_mlflow_supports_pass(uri: str) -> None:
    assert unsupported_tracking_uri(uri) is None


def test_unknown_tracking_scheme_fails_validate_and_run_before_any_state(
    project: Path, tmp_path: Path
) -> None:
    edit(project, "  experiment: support-agent", "  uri: bogus://x\n  experiment: support-agent")
    home = tmp_path / "home"
    line = f"pipeline.yaml:{line_of(project, 'uri: bogus')}: tracking.uri:"
    assert_one_line_error(run_cli(["validate"], project, home), line, "scheme 'bogus'")
    err = assert_one_line_error(run_cli(["run"], project, home), line, "scheme 'bogus'")
    assert "unavailable" not in err and "--resume" not in err  # a mistake to fix, not an outage to wait out
    assert not home.exists(), "run touched state for a config it should have refused"


# -- upper bounds ----------------------------------------------------------------------------------------------


def _config_with(path: tuple[str, ...], value: Any) -> str:
    data = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return yaml.safe_dump(data)


ABSURD: list[tuple[tuple[str, ...], Any]] = [
    (("promote", "bake_s"), 1e308),
    (("promote", "bake_s"), float("inf")),
    (("promote", "shadow", "bake_s"), 86_401),
    (("promote", "schedule"), [100 * i / 101 for i in range(1, 101)] + [100.0]),  # 101 steps
    (("promote", "guards", "min_invocations"), 10**9),
    (("promote", "guards", "max_latency_p95_ms"), 1e12),
    (("promote", "live_traffic", "requests_per_s"), 1e6),
    (("evaluate", "timeout_s"), 1e308),
    (("evaluate", "prices", "default", "input_per_1k"), 1e9),
    (("agent", "inference", "max_tokens"), 10**12),
    (("decide", "min_completed_cases"), 10**9),
    (("decide", "bootstrap_resamples"), 10**9),
    (("decide", "seed"), -1),
    (("decide", "min_improvement"), float("nan")),
    (("deploy", "champion_weight"), 1e308),
    (("deploy", "faults"), {"challenger": {"added_latency_ms": 1e12}}),
]


@pytest.mark.parametrize(("path", "value"), ABSURD, ids=lambda v: ".".join(v) if isinstance(v, tuple) else "")
def test_absurd_numbers_are_refused_naming_the_key(path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config_with(path, value))
    assert ".".join(path) in str(info.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("promote", "bake_s"), 86_400), (("evaluate", "timeout_s"), 3_600), (("decide", "seed"), 2**32 - 1)],
)
def test_the_bounds_themselves_are_allowed(path: tuple[str, ...], value: Any) -> None:
    parse_config(_config_with(path, value))


@pytest.mark.parametrize(("name", "shown"), [("p" * 79 + "_", "p" * 79 + "_"), ("p" * 300, "p" * 80 + "...")])
def test_a_runaway_value_is_quoted_up_to_80_characters_in_its_error(name: str, shown: str) -> None:
    # A pasted file as a name must keep the error one readable line: the value is cut after 80 characters.
    with pytest.raises(ConfigError) as info:
        parse_config(_config_with(("sagemaker", "pipeline_name"), name))
    assert f"sagemaker.pipeline_name: '{shown}' is not a SageMaker pipeline name" in str(info.value)


@pytest.mark.parametrize(
    ("field", "allowed", "refused"),
    [
        ("concurrency", [1, 256], [0, 257]),
        ("staged", [0, 256], [-1, 257]),
        ("timeout_s", [0.5, 3_600], [0, 3_600.5]),
        ("max_retries", [0, 10], [-1, 11]),
        ("repeats", [1, 20], [0, 21]),
    ],
)
def test_the_evaluate_sections_numbers_take_exactly_their_documented_ranges(
    field: str, allowed: list[float], refused: list[float]
) -> None:
    # docs/pipeline-yaml.md, "EvaluateConfig": at most 256 calls in flight and staged, a positive timeout of at
    # most 3,600 s, at most 10 retries, 1 to 20 repeats.
    for value in allowed:
        assert getattr(EvaluateConfig(**{field: value}), field) == value
    for value in refused:
        with pytest.raises(ValidationError, match=field):
            EvaluateConfig(**{field: value})


@pytest.mark.parametrize("field", ["input_per_1k", "output_per_1k"])
def test_a_token_price_is_from_zero_to_a_thousand(field: str) -> None:
    for value in (0.0, 1_000.0):
        assert getattr(PriceTable(**{field: value}), field) == value
    for value in (-0.01, 1_000.5):
        with pytest.raises(ValidationError, match=field):
            PriceTable(**{field: value})


# Metric-unit thresholds have no natural bound (finite is required); the training seed is checked by
# config_checks; package references are versions or ARNs.
UNBOUNDED = {
    ("DecisionConfig", "min_improvement"),
    ("DecisionConfig", "first_release_min_primary"),
    ("GuardrailSpec", "margin"),
    ("TrainConfig", "seed"),
    ("DeployConfig", "champion"),
    ("DeployConfig", "challenger"),
}


def test_every_number_in_the_config_has_an_upper_bound() -> None:
    schema = PipelineConfig.model_json_schema()
    missing = []
    for model, definition in schema["$defs"].items():
        for name, prop in definition.get("properties", {}).items():
            text = json.dumps(prop)
            numeric = '"number"' in text or '"integer"' in text
            bounded = "maximum" in text or "exclusiveMaximum" in text or "maxItems" in text
            if numeric and not bounded and (model, name) not in UNBOUNDED:
                missing.append(f"{model}.{name}")
    assert missing == []


def test_cli_validate_refuses_an_absurd_bake(project: Path, tmp_path: Path) -> None:
    edit(project, "  bake_s: 10 ", "  bake_s: 1e308 ")
    err = assert_one_line_error(run_cli(["validate"], project, tmp_path / "home"), "promote.bake_s")
    assert f"pipeline.yaml:{line_of(project, 'bake_s: 1e308')}:" in err and "86400" in err


# -- canary steps too thin for the guards (a warning) ---------------------------------------------------------


def _promotion(**changes: Any) -> PromotionConfig:
    base: dict[str, Any] = {
        "schedule": [10, 50, 100],
        "bake_s": 3,
        "guards": {"min_invocations": 10},
        "live_traffic": {"requests_per_s": 15},
    }
    return PromotionConfig.model_validate({**base, **changes})


def test_thin_bakes_expected_calls_and_sufficient_bake() -> None:
    (thin,) = thin_bakes(_promotion())
    assert thin.phase == "canary" and thin.percents == (10.0,)
    assert thin.expected_calls == pytest.approx((4.5,))
    assert thin.sufficient_bake_s == 7  # 10 calls / (15 req/s x 10%) = 6.7 s, rounded up
    # The step bakes on up to max_bake_s (default 3 x bake_s = 9 s): 13.5 calls by then, so it is judged.
    assert thin.limit_s == 9 and thin.unjudged_percents == ()
    (short,) = thin_bakes(_promotion(max_bake_s=3))
    assert short.limit_s == 3 and short.unjudged_percents == (10.0,)
    (both,) = thin_bakes(_promotion(bake_s=1))
    assert both.percents == (10.0, 50.0) and both.sufficient_bake_s == 7
    assert both.limit_s == 3 and both.unjudged_percents == (10.0,)  # 50% has 22.5 calls by 3 s
    assert thin_bakes(_promotion(bake_s=7)) == []
    assert thin_bakes(_promotion(live_traffic={"enabled": False})) == []  # real users' traffic: unknown
    unreachable = thin_bakes(_promotion(guards={"min_invocations": 1_000_000}))
    assert unreachable[0].sufficient_bake_s is None
    shadow = thin_bakes(_promotion(bake_s=7, shadow={"enabled": True, "sample_percent": 50, "bake_s": 1}))
    assert [(t.phase, t.percents, t.sufficient_bake_s) for t in shadow] == [("shadow", (50.0,), 2)]
    assert shadow[0].limit_s == 1 and shadow[0].unjudged_percents == (50.0,)  # a shadow phase never bakes on


def test_max_bake_defaults_to_three_bakes_and_may_not_be_shorter_than_one() -> None:
    assert _promotion().step_bake_limit_s == 9
    assert _promotion(max_bake_s=60).step_bake_limit_s == 60
    assert _promotion(bake_s=86_400).step_bake_limit_s == 86_400  # capped at a day, never below bake_s
    with pytest.raises(ValidationError, match=r"max_bake_s \(2\) must be at least bake_s \(3\)"):
        _promotion(max_bake_s=2)


def test_default_pipeline_judges_every_step() -> None:
    assert config_warnings(load_config(ROOT / "pipeline.yaml")) == []


def test_warning_names_the_step_the_line_and_a_bake_that_suffices(project: Path) -> None:
    edit(project, "  bake_s: 10 ", "  bake_s: 3 ")
    (warning,) = config_warnings(load_config(project / "pipeline.yaml"))
    assert warning.startswith(
        f"{project / 'pipeline.yaml'}:{line_of(project, 'bake_s: 3')}: promote.bake_s: "
    )
    assert "canary step 10% expects about 4.5 challenger calls" in warning
    assert "min_invocations (10)" in warning and "promote.bake_s: 7 would suffice" in warning
    assert "the step bakes up to 9 s (promote.max_bake_s) waiting for them" in warning
    edit(project, "  bake_s: 3 ", "  bake_s: 3\n  max_bake_s: 3 ")
    (warning,) = config_warnings(load_config(project / "pipeline.yaml"))
    assert "even at 3 s (promote.max_bake_s) step 10% stays short" in warning
    assert "the canary will roll back (promote.guards.unjudged: rollback)" in warning
    edit(project, "  min_invocations: 10", "  min_invocations: 1000000\n    unjudged: promote")
    (warning,) = config_warnings(load_config(project / "pipeline.yaml"))
    assert "canary steps 10%, 50%, 100%" in warning and "raise promote.live_traffic.requests_per_s" in warning
    assert "step 10/50/100% stays short" in warning
    assert "would be promoted without the guards judging it (promote.guards.unjudged: promote)" in warning


def test_cli_validate_warns_and_still_passes(project: Path, tmp_path: Path) -> None:
    edit(project, "  bake_s: 10 ", "  bake_s: 3 ")
    proc = run_cli(["validate"], project, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stdout.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "promote.bake_s" in warnings[0] and "10%" in warnings[0], proc.stdout
    assert proc.stdout.rstrip().endswith("pipeline.yaml: valid")


# -- a section whose keys are all commented out ------------------------------------------------------------------


def _comment_out(text: str, section: str) -> str:
    """``text`` with every line inside the top-level ``section`` commented out (the header stays)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith(f"{section}:"):
            inside = True
            out.append(f"{section}:")
            continue
        inside = inside and (line.startswith(" ") or not line.strip())
        out.append(f"# {line}" if inside and line.strip() else line)
    return "\n".join(out) + "\n"


def test_a_section_with_every_key_commented_out_is_the_empty_section() -> None:
    # It failed with "sagemaker: Input should be a valid dictionary or instance of SageMakerConfig", though
    # local runs ignore that section and deleting it outright was accepted.
    text = (ROOT / "pipeline.yaml").read_text()
    for section in ("tracking", "sagemaker"):
        assert f"\n{section}:" in text, section
        config = parse_config(_comment_out(text, section))
        assert getattr(config, section) == type(getattr(config, section))(), section
    # A required key of an emptied section is named, with its line.
    with pytest.raises(
        ConfigError, match=r"pipeline.yaml:\d+: deploy.endpoint_name: required key is missing"
    ):
        parse_config(_comment_out(text, "deploy"))
    # `train:` emptied keeps its meaning: no training step.
    assert parse_config(text).train is not None
    assert parse_config(_comment_out(text, "train")).train is None
