"""Built-in scorers on known inputs, the registry, user scorers by import path, and the LLM judge."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from _shared.loopback import serve

from agent_release.steps.evaluate_config import EvaluateConfig, JudgeConfig, PriceTable, ScorerSpec
from agent_release.steps.scorers import (
    DEFAULT_RUBRIC,
    ScorerConfigError,
    argument_match_share,
    arguments_match,
    build_scorer,
    build_scorers,
    case_cost,
    effective_specs,
    fact_coverage,
    normalise_argument,
    parse_judge_score,
    registered_scorers,
    resolve_spec,
    score_bounds,
    trajectory_matches,
)

EXPECT = {
    "expected_facts": ["Order ORD-10427", "shipped on 2026-03-02"],
    "expected_tool_calls": [
        {"name": "lookup_order", "arguments": {"order_id": "ORD-10427"}},
        {"name": "check_refund_eligibility", "arguments": {"order_id": "ORD-10427", "reason": "damaged"}},
    ],
}
GOOD_CALLS = [
    {"name": "lookup_order", "arguments": {"order_id": " ord-10427 "}},
    {"name": "check_refund_eligibility", "arguments": {"order_id": "ORD-10427", "reason": "Damaged"}},
]


def outputs(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "answer": "Your order   ORD-10427 SHIPPED on 2026-03-02.",
        "tool_calls": GOOD_CALLS,
        "error": None,
        "latency_s": 0.75,
        "input_tokens": 1200,
        "output_tokens": 300,
        "variant": "challenger",
        "retries": 0,
    }
    return {**base, **overrides}


def row_score(name: str, outs: dict[str, Any], expect: dict[str, Any] = EXPECT, **args: Any) -> Any:
    from agent_release.steps import scorers

    return scorers._REGISTRY[name](**args)({"input": "q"}, outs, expect)


def test_fact_coverage_is_case_and_whitespace_insensitive() -> None:
    assert fact_coverage("order  ord-10427 was lost", ["Order ORD-10427", "refund"]) == 0.5
    assert fact_coverage("anything", []) is None


def test_answer_correctness_modes() -> None:
    half = outputs(answer="Order ORD-10427 is on its way")
    assert row_score("answer_correctness", outputs()) == 1.0
    assert row_score("answer_correctness", half) == 0.0
    assert row_score("answer_correctness", half, mode="fraction") == 0.5
    assert row_score("answer_correctness", outputs(error="boom")) == 0.0
    assert row_score("answer_correctness", outputs(), {"expected_facts": []}) is None


@pytest.mark.parametrize(
    ("actual", "expected", "mode", "ok"),
    [
        (["a", "b"], ["a", "b"], "exact", True),
        (["a", "x", "b"], ["a", "b"], "exact", False),
        (["a", "x", "b"], ["a", "b"], "in_order", True),
        (["b", "a"], ["a", "b"], "in_order", False),
        (["b", "a"], ["a", "b"], "subset", True),
        (["a"], ["a", "b"], "subset", False),
        ([], [], "exact", True),
    ],
)
def test_trajectory_modes(actual: list[str], expected: list[str], mode: Any, ok: bool) -> None:
    assert trajectory_matches(actual, expected, mode) is ok


def test_tool_trajectory_scorer_and_error_rows() -> None:
    reversed_calls = outputs(tool_calls=list(reversed(GOOD_CALLS)))
    assert row_score("tool_trajectory", outputs()) == 1.0
    assert row_score("tool_trajectory", reversed_calls) == 0.0
    assert row_score("tool_trajectory", reversed_calls, mode="subset") == 1.0
    assert row_score("tool_trajectory", outputs(error="TimeoutError")) == 0.0


def test_arguments_are_normalised_and_matched_once() -> None:
    assert normalise_argument({" Order_ID ": " ORD-1 ", "n": "3", "k": 3}) == {
        "order_id": "ord-1",
        "n": 3.0,
        "k": 3.0,
    }
    wrong_reason = [
        GOOD_CALLS[0],
        {**GOOD_CALLS[1], "arguments": {"order_id": "ORD-10427", "reason": "late"}},
    ]
    assert argument_match_share(GOOD_CALLS, EXPECT["expected_tool_calls"]) == 1.0
    assert argument_match_share(wrong_reason, EXPECT["expected_tool_calls"]) == 0.5
    # One actual call cannot satisfy two expected calls.
    twice = [{"name": "lookup_order", "arguments": {"order_id": "A"}}] * 2
    assert argument_match_share(twice[:1], twice) == 0.5
    assert argument_match_share(GOOD_CALLS, []) is None
    assert row_score("tool_arguments", outputs(tool_calls=wrong_reason)) == 0.5


def test_booleans_nulls_and_lists_are_compared_as_such_not_as_text() -> None:
    assert normalise_argument(True) is True and normalise_argument(None) is None
    assert normalise_argument([" A ", "2", (3,)]) == ["a", 2.0, [3.0]]
    assert arguments_match({"gift_wrap": True}, {"gift_wrap": True})
    assert not arguments_match({"gift_wrap": False}, {"gift_wrap": True})
    # A null argument is not the word "None" a model might write.
    assert not arguments_match({"note": "None"}, {"note": None})
    assert arguments_match({"ids": [" a", "B"]}, {"ids": ["A", "b"]})
    assert not arguments_match({"ids": ["b"]}, {"ids": ["a"]})


def test_an_errored_case_scores_zero_on_tool_arguments_even_when_its_calls_matched() -> None:
    # The calls made before the error match every expected one (share 1.0), but an errored case is a failure.
    assert row_score("tool_arguments", outputs()) == 1.0
    assert row_score("tool_arguments", outputs(error="TimeoutError")) == 0.0


def test_task_success_needs_everything() -> None:
    assert row_score("task_success", outputs()) == 1.0
    assert row_score("task_success", outputs(answer="shipped")) == 0.0
    assert row_score("task_success", outputs(tool_calls=GOOD_CALLS[:1])) == 0.0
    assert row_score("task_success", outputs(error="ServiceUnavailable")) == 0.0


def test_latency_tokens_cost_error() -> None:
    prices = {"default": {"input_per_1k": 1.0, "output_per_1k": 2.0}, "champion": {"input_per_1k": 0.5}}
    assert row_score("latency", outputs()) == 0.75
    assert row_score("tokens", outputs()) == 1500.0
    # A server that sent no usage: unknown, not a free case (it used to score 0 tokens and cost 0).
    silent = outputs(input_tokens=0, output_tokens=0)
    assert row_score("tokens", silent) is None
    assert row_score("cost", silent, prices=prices) is None
    assert row_score("cost", outputs(), prices=prices) == pytest.approx(1.2 + 0.6)
    assert row_score("cost", outputs(variant="champion"), prices=prices) == pytest.approx(0.6)
    assert row_score("error", outputs()) == 0.0
    assert row_score("error", outputs(error="x")) == 1.0


def test_a_single_token_either_way_is_reported_usage() -> None:
    # Only no tokens at all means the server sent no usage: one prompt or one completion token is a count.
    assert row_score("tokens", outputs(input_tokens=1, output_tokens=0)) == 1.0
    assert row_score("tokens", outputs(input_tokens=0, output_tokens=1)) == 1.0
    prices = {"default": {"input_per_1k": 1000.0, "output_per_1k": 1000.0}}
    assert row_score("cost", outputs(input_tokens=0, output_tokens=1), prices=prices) == pytest.approx(1.0)


def test_a_price_missing_from_the_table_costs_nothing() -> None:
    # As PriceTable's defaults say (0.0): a table that leaves out one side charges nothing for it.
    assert case_cost("challenger", 1000, 500, {"default": {"input_per_1k": 2.0}}) == pytest.approx(2.0)
    assert case_cost("challenger", 1000, 500, {"default": {"output_per_1k": 4.0}}) == pytest.approx(2.0)
    assert row_score("cost", outputs()) == 0.0  # no price table at all (``prices: null``)


def test_built_in_scores_are_bounded_as_the_docs_say() -> None:
    # docs/pipeline-yaml.md: a built-in score's interval stops at 0 and 1 for the rates and shares, at 0
    # (upwards) for latency, tokens and cost.
    rates = ["answer_correctness", "tool_trajectory", "tool_arguments", "task_success", "error", "llm_judge"]
    amounts = ["latency", "tokens", "cost"]
    bounds = score_bounds([{"name": n, "args": {}} for n in rates + amounts])
    assert bounds == {**dict.fromkeys(rates, (0.0, 1.0)), **dict.fromkeys(amounts, (0.0, float("inf")))}


def test_registry_resolves_defaults_and_rejects_bad_specs() -> None:
    assert {"answer_correctness", "tool_trajectory", "cost", "llm_judge"} <= set(registered_scorers())
    assert resolve_spec(ScorerSpec(name="tool_trajectory")) == {
        "name": "tool_trajectory",
        "args": {"mode": "exact"},
    }
    with pytest.raises(ScorerConfigError, match="unknown scorer 'nope'"):
        build_scorer(ScorerSpec(name="nope"))
    with pytest.raises(ScorerConfigError, match="unexpected keyword"):
        build_scorer(ScorerSpec(name="tokens", args={"x": 1}))
    with pytest.raises(ScorerConfigError, match="mode must be"):
        build_scorer(ScorerSpec(name="tool_trajectory", args={"mode": "fuzzy"}))
    with pytest.raises(ScorerConfigError, match="more than once"):
        build_scorers([ScorerSpec(name="tokens"), ScorerSpec(name="tokens")])


def test_build_scorers_gives_one_scorer_per_spec_in_order() -> None:
    built = build_scorers(
        [ScorerSpec(name="error"), ScorerSpec(name="tool_trajectory", args={"mode": "subset"})]
    )
    assert [b.name for b in built] == ["error", "tool_trajectory"]
    assert built[1].spec == {"name": "tool_trajectory", "args": {"mode": "subset"}}
    reversed_calls = outputs(tool_calls=list(reversed(GOOD_CALLS)))
    assert built[1].scorer(inputs={"input": "q"}, outputs=reversed_calls, expectations=EXPECT) == 1.0


def test_a_built_in_factory_stays_callable_under_its_own_name() -> None:
    # register_scorer hands the factory back: the module's names are the factories the registry holds.
    from agent_release.steps.scorers import tool_trajectory

    assert tool_trajectory(mode="subset")({}, outputs(tool_calls=list(reversed(GOOD_CALLS))), EXPECT) == 1.0


def test_llm_judge_spec_records_its_documented_defaults() -> None:
    # docs/pipeline-yaml.md, "Built-in scorers": the evaluation records every argument, defaults included.
    resolved = resolve_spec(ScorerSpec(name="llm_judge", args={"base_url": "http://h:1/v1", "model": "j"}))
    assert resolved["args"] == {
        "base_url": "http://h:1/v1",
        "model": "j",
        "api_key_env": None,
        "rubric": DEFAULT_RUBRIC,
        "timeout_s": 30.0,
        "max_retries": 3,
    }


def test_built_scorer_runs_under_mlflow_scorer_protocol() -> None:
    built = build_scorer(ScorerSpec(name="answer_correctness", args={"mode": "fraction"}))
    assert built.name == "answer_correctness"
    assert built.spec == {"name": "answer_correctness", "args": {"mode": "fraction"}}
    half = outputs(answer="Order ORD-10427")
    assert built.scorer(inputs={"input": "q"}, outputs=half, expectations=EXPECT) == 0.5


def test_effective_specs_inject_prices_and_judge() -> None:
    config = EvaluateConfig(
        prices={"default": PriceTable(input_per_1k=0.1, output_per_1k=0.2)},
        judge=JudgeConfig(base_url="http://127.0.0.1:1/v1", model="judge"),
    )
    specs = {s.name: s for s in effective_specs(config)}
    assert specs["cost"].args["prices"] == {"default": {"input_per_1k": 0.1, "output_per_1k": 0.2}}
    assert specs["llm_judge"].args["model"] == "judge"
    assert "llm_judge" not in {s.name for s in effective_specs(EvaluateConfig())}


def test_a_listed_judge_takes_the_configs_fields_under_its_own_args_and_nothing_else_changes() -> None:
    own_prices = {"challenger": {"input_per_1k": 3.0, "output_per_1k": 0.0}}
    config = EvaluateConfig(
        prices={"default": PriceTable(input_per_1k=0.1, output_per_1k=0.2)},
        judge=JudgeConfig(base_url="http://127.0.0.1:1/v1", model="judge"),
        scorers=[
            ScorerSpec(name="tool_trajectory", args={"mode": "in_order"}),
            ScorerSpec(name="cost", args={"prices": own_prices}),
            ScorerSpec(name="llm_judge", args={"model": "strict-judge", "rubric": "Be strict."}),
        ],
    )
    specs = effective_specs(config)
    assert [(s.name, s.args) for s in specs] == [
        ("tool_trajectory", {"mode": "in_order"}),
        ("cost", {"prices": own_prices}),  # the scorer's own prices are kept, not replaced
        (
            "llm_judge",
            {
                "base_url": "http://127.0.0.1:1/v1",
                "model": "strict-judge",
                "api_key_env": None,
                "rubric": "Be strict.",
            },
        ),
    ]


@pytest.fixture
def user_scorer_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    pkg = tmp_path / "my_scoring"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "polite.py").write_text(
        textwrap.dedent(
            """
            from mlflow.genai.scorers import scorer

            def politeness(word="please"):
                def score(inputs, outputs, expectations):
                    return float(word in outputs["answer"].lower())
                return score

            def repeat_of():
                def score(inputs, outputs, expectations):
                    return float(inputs["repeat"])
                return score

            def mlflow_native():
                @scorer(name="answer_length")
                def answer_length(outputs):
                    return len(outputs["answer"])
                return answer_length
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_scoring.polite"
    for name in [m for m in sys.modules if m.startswith("my_scoring")]:
        del sys.modules[name]


def test_user_scorer_by_import_path(user_scorer_module: str) -> None:
    plain = build_scorer(ScorerSpec(name=f"{user_scorer_module}:politeness", args={"word": "thanks"}))
    assert plain.name == "politeness"
    assert plain.spec["args"] == {"word": "thanks"}
    assert plain.scorer(inputs={}, outputs=outputs(answer="Thanks!"), expectations={}) == 1.0
    native = build_scorer(ScorerSpec(name=f"{user_scorer_module}:mlflow_native"))
    assert native.name == "answer_length"
    assert native.scorer(outputs={"answer": "abc"}) == 3
    with pytest.raises(ScorerConfigError, match="cannot be imported"):
        build_scorer(ScorerSpec(name=f"{user_scorer_module}:missing"))


def test_a_row_scorer_sees_the_inputs_mlflow_passes(user_scorer_module: str) -> None:
    built = build_scorer(ScorerSpec(name=f"{user_scorer_module}:repeat_of"))
    inputs = {"input": "q", "case_id": "c1", "cluster": "k1", "repeat": 2}
    assert built.scorer(inputs=inputs, outputs=outputs(), expectations={}) == 2.0


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        # A module written as a script: argparse printed its usage and agent-release exited 2, as if it
        # were agent-release's own usage error; sys.exit(3) ended the command with 3 and nothing said.
        (
            "import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\n",
            "module 'scriptish' exited on import (exit code 2)",
        ),
        ("import sys\nsys.exit(3)\n", "module 'scriptish' exited on import (exit code 3)"),
        ("raise RuntimeError('needs a GPU')\n", "RuntimeError: needs a GPU"),
    ],
)
def test_a_user_module_that_exits_or_raises_on_import_is_one_config_error(
    source: str,
    reason: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "scriptish.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "scriptish", raising=False)

    with pytest.raises(ScorerConfigError) as raised:
        build_scorer(ScorerSpec(name="scriptish:factory"))

    assert str(raised.value) == f"scorer 'scriptish:factory' cannot be imported: {reason}"
    assert capsys.readouterr().err == "", "the module's usage text is not shown as agent-release's"


def test_a_row_scorer_that_cannot_take_the_three_arguments_is_refused_when_built(
    user_scorer_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It passed `validate`, then every case of the run logged "takes 1 positional argument but 3 were given".
    (tmp_path / "one_arg.py").write_text(
        "def factory():\n    def score(row):\n        return 1.0\n    return score\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "one_arg", raising=False)

    with pytest.raises(
        ScorerConfigError,
        match=r"scorer 'one_arg:factory' returned a function that cannot be "
        r"called as \(inputs, outputs, expectations\): too many positional arguments",
    ):
        build_scorer(ScorerSpec(name="one_arg:factory"))
    build_scorer(ScorerSpec(name=f"{user_scorer_module}:politeness", args={"word": "thanks"}))  # 3 args: fine


class _FakeJudge(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        answer = json.loads(body["messages"][1]["content"])["answer"]
        score = 0.9 if "shipped" in answer.lower() else 0.1
        reply = {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": f'Sure. {{"score": {score}, "rationale": "ok"}}',
                    }
                }
            ]
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def judge_url() -> Iterator[str]:
    with serve(_FakeJudge) as url:
        yield f"{url}/v1"


def test_llm_judge_against_fake_openai_server(judge_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", "sekret")
    built = build_scorer(
        ScorerSpec(name="llm_judge", args={"base_url": judge_url, "model": "j1", "api_key_env": "JUDGE_KEY"})
    )
    assert built.scorer(inputs={"input": "where?"}, outputs=outputs(), expectations=EXPECT) == 0.9
    assert (
        built.scorer(inputs={"input": "where?"}, outputs=outputs(answer="no idea"), expectations=EXPECT)
        == 0.1
    )
    assert built.scorer(inputs={}, outputs=outputs(error="boom"), expectations=EXPECT) == 0.0
    sent = _FakeJudge.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "j1"
    # The judge is asked about this case: its question, expected facts and answer, under the rubric.
    assert sent["body"]["temperature"] == 0
    system, user = sent["body"]["messages"]
    assert system == {"role": "system", "content": DEFAULT_RUBRIC}
    assert json.loads(user["content"]) == {
        "question": "where?",
        "expected_facts": EXPECT["expected_facts"],
        "answer": "no idea",
    }
    assert sent["auth"] == "Bearer sekret"
    # The server's root, as a model package's base_url is written, reaches the same path.
    root = build_scorer(
        ScorerSpec(name="llm_judge", args={"base_url": judge_url.removesuffix("/v1"), "model": "j1"})
    )
    assert root.scorer(inputs={"input": "where?"}, outputs=outputs(), expectations=EXPECT) == 0.9
    assert _FakeJudge.requests[-1]["path"] == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("base_url", "posted_to"),
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1/chat/completions"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1/chat/completions"),
        ("https://api.example.com/openai/v1", "https://api.example.com/openai/v1/chat/completions"),
        # A server root, as a model package's base_url is written: it used to post to /chat/completions (404).
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/chat/completions"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1/chat/completions"),
    ],
)
def test_the_judge_posts_where_openai_clients_would_and_a_server_root_gets_v1(
    base_url: str, posted_to: str
) -> None:
    from agent_release.steps.scorers import judge_chat_url

    assert judge_chat_url(base_url) == posted_to


def test_parse_judge_score_reads_json_in_prose_and_rejects_what_is_no_0_to_1_score() -> None:
    assert parse_judge_score('I think {"score": 0.35, "rationale": "partly"}.') == 0.35
    assert parse_judge_score('{"score": 1}') == 1.0
    assert parse_judge_score('{"score": 0}') == 0.0
    with pytest.raises(ValueError, match="no JSON"):
        parse_judge_score("great answer")
    # A judge grading on another scale (7 of 10) or not at all is a scorer error, not a clipped 1.0 or 0.0.
    for reply in (
        '{"score": 7}',
        '{"score": 1.7}',
        '{"score": -0.4}',
        '{"score": NaN}',
        '{"score": Infinity}',
    ):
        with pytest.raises(ValueError, match=r"outside 0\.\.1"):
            parse_judge_score(reply)


class _ThrottlingJudge(BaseHTTPRequestHandler):
    """Answers 429 (then 503) before it grades: a hosted judge under load."""

    calls: ClassVar[int] = 0
    failures: ClassVar[int] = 2

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        if type(self).calls <= type(self).failures:
            status, data = (429 if type(self).calls == 1 else 503), b'{"error": "busy"}'
        else:
            status = 200
            reply = {"choices": [{"message": {"role": "assistant", "content": '{"score": 0.8}'}}]}
            data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_llm_judge_retries_throttling_and_5xx_then_gives_up() -> None:
    import httpx

    _ThrottlingJudge.calls, _ThrottlingJudge.failures = 0, 2
    with serve(_ThrottlingJudge) as url:
        built = build_scorer(ScorerSpec(name="llm_judge", args={"base_url": url, "model": "j"}))
        assert built.spec["args"]["max_retries"] == 3
        assert built.scorer(inputs={"input": "q"}, outputs=outputs(), expectations=EXPECT) == 0.8
        assert _ThrottlingJudge.calls == 3
        _ThrottlingJudge.calls, _ThrottlingJudge.failures = 0, 10
        once = build_scorer(
            ScorerSpec(name="llm_judge", args={"base_url": url, "model": "j", "max_retries": 1})
        )
        with pytest.raises(httpx.HTTPStatusError, match="503"):
            once.scorer(inputs={"input": "q"}, outputs=outputs(), expectations=EXPECT)
        assert _ThrottlingJudge.calls == 2
    with pytest.raises(ScorerConfigError, match="max_retries"):
        build_scorer(ScorerSpec(name="llm_judge", args={"base_url": url, "model": "j", "max_retries": -1}))


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        ({"max_retries": 0}, None),
        ({"max_retries": 10}, None),
        ({"max_retries": 11}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"timeout_s": 3600}, None),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 3600.5}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        ({"model": "  "}, "model must name"),
        ({"model": None}, "model must name"),
    ],
)
def test_llm_judge_settings_are_taken_up_to_the_ends_of_their_ranges(
    args: dict[str, Any], refused: str | None
) -> None:
    spec = ScorerSpec(name="llm_judge", args={"base_url": "http://127.0.0.1:1/v1", "model": "j", **args})
    if refused is None:
        build_scorer(spec)
    else:
        with pytest.raises(ScorerConfigError, match=refused):
            build_scorer(spec)


@pytest.fixture
def jitter_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``random.uniform`` gives back its bounds: a full-jitter wait reads as ``(0, ceiling)``."""
    from agent_release.steps import scorers

    monkeypatch.setattr(scorers, "random", SimpleNamespace(uniform=lambda low, high: (low, high)))


@pytest.mark.usefixtures("jitter_bounds")
def test_judge_backoff_takes_retry_after_up_to_the_cap_else_full_jitter_doubling_per_try() -> None:
    from agent_release.steps.scorers import JUDGE_MAX_BACKOFF_S, _backoff_s

    assert [_backoff_s(attempt, 0.5, None) for attempt in range(3)] == [(0, 0.5), (0, 1.0), (0, 2.0)]
    assert _backoff_s(20, 0.5, None) == (0, JUDGE_MAX_BACKOFF_S)
    assert _backoff_s(0, 0.5, "3") == 3.0
    assert _backoff_s(0, 0.5, "0") == 0.0  # "retry now" is an answer, not a missing one
    assert _backoff_s(0, 0.5, "120") == JUDGE_MAX_BACKOFF_S
    # A Retry-After that is an HTTP date, negative or no finite number: our own backoff.
    for retry_after in ("Wed, 21 Oct 2015 07:28:00 GMT", "-1", "nan", "inf"):
        assert _backoff_s(1, 0.5, retry_after) == (0, 1.0), retry_after


@pytest.mark.usefixtures("jitter_bounds")
def test_judge_retries_a_500_and_a_refused_connection_with_growing_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    from agent_release.steps import scorers

    url = "http://judge.invalid/v1/chat/completions"
    script: list[Any] = []
    sleeps: list[Any] = []

    def post(url: str, **_: Any) -> httpx.Response:
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        status, headers = step
        return httpx.Response(status, headers=headers, json={}, request=httpx.Request("POST", url))

    monkeypatch.setattr(httpx, "post", post)
    monkeypatch.setattr(scorers, "time", SimpleNamespace(sleep=sleeps.append))

    script[:] = [httpx.ConnectError("refused"), (500, {}), (429, {"Retry-After": "2"}), (200, {})]
    assert scorers.post_with_retries(url, {}, {}, timeout_s=1, max_retries=3).status_code == 200
    first, second, third = sleeps
    assert first[0] == 0 < first[1] and second == (0, 2 * first[1]) and third == 2.0
    sleeps.clear()
    script[:] = [httpx.ConnectError("refused")]
    with pytest.raises(httpx.ConnectError):
        scorers.post_with_retries(url, {}, {}, timeout_s=1, max_retries=0)
    # A client error other than throttling is the answer: not retried.
    script[:] = [(400, {}), (200, {})]
    with pytest.raises(httpx.HTTPStatusError, match="400"):
        scorers.post_with_retries(url, {}, {}, timeout_s=1, max_retries=3)
    assert sleeps == [] and len(script) == 1


def test_a_user_row_scorer_that_never_returns_times_out_as_a_scorer_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from mlflow.genai.scorers import base
    from mlflow.utils.timeout import MlflowTimeoutError

    (tmp_path / "stuck_scoring.py").write_text(
        textwrap.dedent(
            """
            import threading

            RELEASE = threading.Event()

            def stuck():
                def score(inputs, outputs, expectations):
                    RELEASE.wait(20)  # a call to a service that never answers (released by the test)
                    return 1.0
                return score
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "DEFAULT_SCORER_TIMEOUT", 1)
    built = build_scorer(ScorerSpec(name="stuck_scoring:stuck"))
    started = time.monotonic()
    try:
        with pytest.raises(MlflowTimeoutError, match="timed out after 1 seconds"):
            built.scorer.run(inputs={"input": "q"}, outputs=outputs(), expectations=EXPECT)
        assert time.monotonic() - started < 10
    finally:
        sys.modules["stuck_scoring"].RELEASE.set()
        del sys.modules["stuck_scoring"]
    # Built-ins stay without the watchdog's thread per call: they are pure functions of the row.
    assert build_scorer(ScorerSpec(name="task_success")).scorer.timeout == 0


def test_a_scorer_factory_or_row_scorer_that_exits_is_an_error_not_the_end_of_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Guarded at import only: a factory calling sys.exit(0) made `validate` and `run` exit 0 with nothing
    # said and nothing done; a row scorer calling it would end the evaluation the same way.
    (tmp_path / "scriptish.py").write_text(
        "import sys\n"
        "def quits():\n    sys.exit(0)\n"
        "def builds():\n"
        "    def row(inputs, outputs, expectations):\n        sys.exit(4)\n"
        "    return row\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "scriptish", raising=False)
    with pytest.raises(ScorerConfigError) as raised:
        build_scorer(ScorerSpec(name="scriptish:quits"))
    assert str(raised.value) == "scorer 'scriptish:quits' cannot be built: its factory exited (exit code 0)"

    from agent_release.steps.inline_scoring import InlineScoring

    built = build_scorer(ScorerSpec(name="scriptish:builds"))
    (feedback,) = InlineScoring._run_scorer(built, {"input": "q"}, outputs(answer="a"), {}, None)
    assert feedback.error is not None and feedback.error.error_code == "SCORER_ERROR"
    assert feedback.error.error_message == "scorer exited (exit code 4)"
    assert capsys.readouterr().err == ""
