"""Scorers by name: a registry of scorer factories, rebuilt from ``pipeline.yaml`` specs (name + args).

A built-in scorer is a factory registered with :func:`register_scorer`; calling it with keyword arguments
returns a *row scorer*, a pure function ``(inputs, outputs, expectations) -> float | None`` that can be
tested without MLflow. :func:`build_scorer` turns a :class:`ScorerSpec` into a :class:`BuiltScorer`: the
resolved spec (every argument, defaults included, so the evaluation can record exactly what it ran) and an
MLflow ``@scorer`` wrapping the row scorer for ``mlflow.genai.evaluate``.

A user scorer is named by import path, ``ScorerSpec(name="my_pkg.scoring:politeness", args={...})``: the
factory is called with ``args`` and may return an MLflow ``Scorer`` (used as is) or a row scorer.

What a row scorer sees (written by ``evaluate_variants``):

- ``inputs``: ``{"input": str, "case_id": str, "cluster": str, "repeat": int}`` (0 to K-1 with
  ``evaluate.repeats: K``)
- ``outputs``: ``{"answer": str, "tool_calls": [{"name", "arguments"}], "error": str | None, "latency_s":
  float, "input_tokens": int, "output_tokens": int, "variant": str, "retries": int}``
- ``expectations``: ``{"expected_facts": [str], "expected_tool_calls": [{"name", "arguments"}]}``

``None`` means "not applicable" (e.g. no expected facts); MLflow then records no assessment for the row.
A case that errored scores 0.0 on every quality scorer (a failure, never a gap).

Usage::

    built = build_scorer(ScorerSpec(name="tool_trajectory", args={"mode": "in_order"}))
    built.spec      # {"name": "tool_trajectory", "args": {"mode": "in_order"}}
    mlflow.genai.evaluate(data=..., scorers=[built.scorer])
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from agent_release.agents.user_imports import UserImportError, call_user_factory, import_user_object
from agent_release.steps.evaluate_config import MAX_TIMEOUT_S, EvaluateConfig, PriceTable, ScorerSpec
from agent_release.steps.evaluation_records import usage_reported

RowScorer = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], float | None]
ScorerFactory = Callable[..., Any]
_F = TypeVar("_F", bound=ScorerFactory)

TrajectoryMode = Literal["exact", "in_order", "subset"]
FactsMode = Literal["all", "fraction"]

_REGISTRY: dict[str, ScorerFactory] = {}
# The values each built-in can take (register_scorer's ``bounds``): an interval around a mean is cut to them.
_BOUNDS: dict[str, tuple[float, float]] = {}
UNIT_INTERVAL = (0.0, 1.0)
NON_NEGATIVE = (0.0, float("inf"))
# Built-in scorers whose smaller values are better; every other built-in scores quality (higher is better).
LOWER_IS_BETTER_SCORERS = frozenset({"latency", "tokens", "cost", "error"})
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


class ScorerConfigError(ValueError):
    """A scorer spec names no known scorer or carries arguments its factory does not accept."""


@dataclass(frozen=True)
class BuiltScorer:
    """A scorer ready for ``mlflow.genai.evaluate``, with the exact spec it was built from."""

    name: str
    spec: dict[str, Any]
    scorer: Any  # mlflow.genai.scorers.Scorer


def register_scorer(name: str, *, bounds: tuple[float, float] | None = None) -> Callable[[_F], _F]:
    """Register a scorer factory under ``name`` (the name used in ``pipeline.yaml``).

    ``bounds``: the smallest and largest value its scorer can return, if known (see :func:`score_bounds`).
    """

    def decorate(factory: _F) -> _F:
        _REGISTRY[name] = factory
        if bounds is not None:
            _BOUNDS[name] = bounds
        return factory

    return decorate


def score_bounds(specs: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """Metric name -> the values it can take, for the built-in scorers among ``specs`` (resolved specs,
    ``{"name", "args"}``, as :attr:`BuiltScorer.spec`). A user scorer (``module:attr``) has no known range."""
    return {str(spec["name"]): _BOUNDS[str(spec["name"])] for spec in specs if str(spec["name"]) in _BOUNDS}


def registered_scorers() -> list[str]:
    """Names of the built-in scorers."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> ScorerFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    _, _, attr = name.partition(":")
    if not attr:
        raise ScorerConfigError(
            f"unknown scorer '{name}'; built-ins are {', '.join(registered_scorers())}, "
            "or give an import path 'pkg.module:factory'"
        )
    try:
        factory = import_user_object("scorer", name)
    except UserImportError as exc:
        raise ScorerConfigError(str(exc)) from None
    if not callable(factory):
        raise ScorerConfigError(f"scorer '{name}' is not callable")
    from mlflow.genai.scorers import Scorer

    if isinstance(factory, Scorer):
        # Called with the spec's args, an @scorer function would run (and fail) instead of returning one.
        raise ScorerConfigError(
            f"scorer '{name}' is an MLflow Scorer, not a factory: name a function that returns it "
            f"(def {attr}_factory(): return {attr})"
        )
    return factory  # type: ignore[no-any-return]


def resolve_spec(spec: ScorerSpec) -> dict[str, Any]:
    """``{"name", "args"}`` with every factory argument, defaults filled in (what gets recorded)."""
    factory = _lookup(spec.name)
    try:
        bound = inspect.signature(factory).bind(**spec.args)
    except TypeError as exc:
        raise ScorerConfigError(f"scorer '{spec.name}': {exc}") from None
    bound.apply_defaults()
    return {"name": spec.name, "args": json.loads(json.dumps(dict(bound.arguments), default=str))}


def build_scorer(spec: ScorerSpec) -> BuiltScorer:
    """Build the MLflow scorer for ``spec``; raises :class:`ScorerConfigError` for a bad spec."""
    from mlflow.genai.scorers import Scorer

    resolved = resolve_spec(spec)
    try:
        product = call_user_factory("scorer", spec.name, _lookup(spec.name), **spec.args)
    except UserImportError as exc:
        raise ScorerConfigError(str(exc)) from None
    if isinstance(product, Scorer):
        return BuiltScorer(name=product.name, spec=resolved, scorer=product)
    if not callable(product):
        raise ScorerConfigError(f"scorer '{spec.name}' returned {type(product).__name__}, not a scorer")
    _check_row_scorer(spec.name, product)
    name = spec.name.rpartition(":")[2] if ":" in spec.name else spec.name
    mlflow_scorer = _as_mlflow_scorer(name, product, built_in=spec.name in _REGISTRY)
    return BuiltScorer(name=name, spec=resolved, scorer=mlflow_scorer)


def build_scorers(specs: Sequence[ScorerSpec]) -> list[BuiltScorer]:
    """Build every spec; two scorers may not share a metric name."""
    built = [build_scorer(s) for s in specs]
    names = [b.name for b in built]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ScorerConfigError(f"scorer name(s) listed more than once: {', '.join(dupes)}")
    return built


def effective_specs(config: EvaluateConfig) -> list[ScorerSpec]:
    """The config's scorers with the price table given to ``cost`` and the judge to ``llm_judge``.

    A configured judge adds ``llm_judge`` when the list does not name it.
    """
    prices = {name: table.model_dump() for name, table in config.prices.items()}
    specs: list[ScorerSpec] = []
    for spec in config.scorers:
        args = dict(spec.args)
        if spec.name == "cost" and "prices" not in args:
            args["prices"] = prices
        if spec.name == "llm_judge" and config.judge is not None:
            args = {**config.judge.model_dump(), **args}
        specs.append(ScorerSpec(name=spec.name, args=args))
    if config.judge is not None and not any(s.name == "llm_judge" for s in specs):
        specs.append(ScorerSpec(name="llm_judge", args=config.judge.model_dump()))
    return specs


def _check_row_scorer(name: str, row_scorer: Callable[..., Any]) -> None:
    """A row scorer is called as ``f(inputs, outputs, expectations)``: refuse one that cannot be, at build
    time (so ``validate`` says it once), instead of a failed score on every case of the run."""
    try:
        signature = inspect.signature(row_scorer)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): it is called and judged case by case
    try:
        signature.bind(None, None, None)
    except TypeError as exc:
        raise ScorerConfigError(
            f"scorer '{name}' returned a function that cannot be called as (inputs, outputs, expectations): {exc}"
        ) from None


def _as_mlflow_scorer(name: str, row_scorer: RowScorer, *, built_in: bool = True) -> Any:
    from mlflow.genai.scorers import scorer

    # MLflow passes arguments by parameter name, so the wrapper must spell them out.
    def score(inputs: Any, outputs: Any, expectations: Any) -> float | None:
        value = row_scorer(inputs or {}, outputs or {}, expectations or {})
        if isinstance(value, numbers.Real) and not math.isfinite(value):
            # Raised, so the row records a scorer error: NaN or infinity is no score (None is "not
            # applicable"), would crash the variant's aggregates and cannot be serialised on the trace.
            raise ValueError(f"scorer '{name}' returned {value!r}, not a finite number")
        return value

    # A built-in row scorer is a pure function of the row: it cannot hang, so it runs without MLflow's
    # timeout watchdog, which starts a thread per call (about half the scoring time in py-spy samples). The
    # LLM judge has its own HTTP timeout. A user's function may call anything (a service, a file, a lock):
    # it gets MLflow's default timeout (timeout=None), as the user's own @scorer would, so one that never
    # returns is a scorer error on its row instead of an evaluation that never ends.
    return scorer(name=name, timeout=0 if built_in else None)(score)


# -- pure scoring functions ------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()


def fact_coverage(answer: str, facts: Sequence[str]) -> float | None:
    """Share of ``facts`` found in ``answer`` (case- and whitespace-insensitive); None without facts."""
    if not facts:
        return None
    haystack = _squash(answer)
    return sum(1 for f in facts if _squash(f) in haystack) / len(facts)


def trajectory_matches(actual: Sequence[str], expected: Sequence[str], mode: TrajectoryMode) -> bool:
    """Whether the tool names called match the expected ones.

    ``exact``: same sequence; ``in_order``: expected is a subsequence of actual (extra calls allowed);
    ``subset``: every expected tool was called at least once, in any order.
    """
    if mode == "exact":
        return list(actual) == list(expected)
    if mode == "subset":
        return set(expected) <= set(actual)
    remaining = iter(actual)
    return all(any(name == step for step in remaining) for name in expected)


def normalise_argument(value: Any) -> Any:
    """Canonical form for comparing tool arguments: trimmed case-folded text, numbers as floats."""
    if isinstance(value, Mapping):
        return {_squash(str(k)): normalise_argument(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise_argument(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    text = _squash(str(value))
    return float(text) if _NUMBER.match(text) else text


def arguments_match(actual: Any, expected: Mapping[str, Any]) -> bool:
    """Every expected argument is present in ``actual`` with an equal normalised value (arguments that are
    no JSON object, e.g. a list the model sent, hold no named argument)."""
    got = normalise_argument(actual if isinstance(actual, Mapping) else {})
    want = normalise_argument(expected)
    return all(k in got and got[k] == v for k, v in want.items())


def argument_match_share(
    actual_calls: Sequence[Mapping[str, Any]], expected_calls: Sequence[Mapping[str, Any]]
) -> float | None:
    """Share of expected calls matched by an actual call of the same tool with matching arguments.

    Each actual call matches at most one expected call. None when no calls are expected.
    """
    if not expected_calls:
        return None
    unused = list(actual_calls)
    matched = 0
    for want in expected_calls:
        for i, got in enumerate(unused):
            if got.get("name") == want.get("name") and arguments_match(
                got.get("arguments") or {}, want.get("arguments") or {}
            ):
                matched += 1
                del unused[i]
                break
    return matched / len(expected_calls)


def case_cost(
    variant: str, input_tokens: int, output_tokens: int, prices: Mapping[str, Mapping[str, float]]
) -> float:
    """Cost of one case from a price table keyed by variant name, falling back to ``default``."""
    table = prices.get(variant) or prices.get("default") or {}
    return (
        input_tokens * table.get("input_per_1k", 0.0) + output_tokens * table.get("output_per_1k", 0.0)
    ) / 1000


def _names(calls: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(c.get("name")) for c in calls]


def _failed(outputs: Mapping[str, Any]) -> bool:
    return bool(outputs.get("error"))


# -- built-in scorers ------------------------------------------------------------------------------------


@register_scorer("answer_correctness", bounds=UNIT_INTERVAL)
def answer_correctness(mode: FactsMode = "all") -> RowScorer:
    """Expected facts present in the answer: 1/0 when all are (``all``) or their share (``fraction``)."""
    if mode not in ("all", "fraction"):
        raise ScorerConfigError(f"answer_correctness: mode must be 'all' or 'fraction', got '{mode}'")

    def score(
        _i: Mapping[str, Any], outputs: Mapping[str, Any], expectations: Mapping[str, Any]
    ) -> float | None:
        share = fact_coverage(str(outputs.get("answer") or ""), expectations.get("expected_facts") or [])
        if share is None:
            return None
        if _failed(outputs):
            return 0.0
        return share if mode == "fraction" else float(share == 1.0)

    return score


@register_scorer("tool_trajectory", bounds=UNIT_INTERVAL)
def tool_trajectory(mode: TrajectoryMode = "exact") -> RowScorer:
    """1.0 when the tools called match the expected tool names under ``mode`` (exact|in_order|subset)."""
    if mode not in ("exact", "in_order", "subset"):
        raise ScorerConfigError(f"tool_trajectory: mode must be exact, in_order or subset, got '{mode}'")

    def score(_i: Mapping[str, Any], outputs: Mapping[str, Any], expectations: Mapping[str, Any]) -> float:
        if _failed(outputs):
            return 0.0
        actual = _names(outputs.get("tool_calls") or [])
        expected = _names(expectations.get("expected_tool_calls") or [])
        return float(trajectory_matches(actual, expected, mode))

    return score


@register_scorer("tool_arguments", bounds=UNIT_INTERVAL)
def tool_arguments() -> RowScorer:
    """Share of expected tool calls whose (normalised) arguments match an actual call of that tool."""

    def score(
        _i: Mapping[str, Any], outputs: Mapping[str, Any], expectations: Mapping[str, Any]
    ) -> float | None:
        share = argument_match_share(
            outputs.get("tool_calls") or [], expectations.get("expected_tool_calls") or []
        )
        if share is None:
            return None
        return 0.0 if _failed(outputs) else share

    return score


@register_scorer("task_success", bounds=UNIT_INTERVAL)
def task_success() -> RowScorer:
    """1.0 when there is no error, the trajectory is exact, all arguments match and all facts are present."""

    def score(_i: Mapping[str, Any], outputs: Mapping[str, Any], expectations: Mapping[str, Any]) -> float:
        if _failed(outputs):
            return 0.0
        calls = outputs.get("tool_calls") or []
        expected = expectations.get("expected_tool_calls") or []
        facts = fact_coverage(str(outputs.get("answer") or ""), expectations.get("expected_facts") or [])
        args = argument_match_share(calls, expected)
        ok = (
            trajectory_matches(_names(calls), _names(expected), "exact")
            and args in (None, 1.0)
            and facts in (None, 1.0)
        )
        return float(ok)

    return score


@register_scorer("latency", bounds=NON_NEGATIVE)
def latency() -> RowScorer:
    """Seconds the case took end to end (until its error, for a failed case)."""

    def score(_i: Mapping[str, Any], outputs: Mapping[str, Any], _e: Mapping[str, Any]) -> float | None:
        value = outputs.get("latency_s")
        return None if value is None else float(value)

    return score


@register_scorer("tokens", bounds=NON_NEGATIVE)
def tokens() -> RowScorer:
    """Input plus output tokens the case consumed (over every model call); None when none were reported."""

    def score(_i: Mapping[str, Any], outputs: Mapping[str, Any], _e: Mapping[str, Any]) -> float | None:
        used = int(outputs.get("input_tokens") or 0), int(outputs.get("output_tokens") or 0)
        return float(sum(used)) if usage_reported(*used) else None

    return score


@register_scorer("cost", bounds=NON_NEGATIVE)
def cost(prices: Mapping[str, Mapping[str, float]] | None = None) -> RowScorer:
    """Cost of the case's tokens from ``prices`` (variant name or ``default`` -> input/output per 1k); None
    when the model reported no token usage (no input and no output tokens)."""
    table = price_tables(prices)

    def score(_i: Mapping[str, Any], outputs: Mapping[str, Any], _e: Mapping[str, Any]) -> float | None:
        used = int(outputs.get("input_tokens") or 0), int(outputs.get("output_tokens") or 0)
        if not usage_reported(*used):
            return None
        return case_cost(str(outputs.get("variant") or ""), *used, table)

    return score


def price_tables(prices: Any) -> dict[str, dict[str, float]]:
    """``prices`` checked and read as ``evaluate.prices`` is (a map of price tables: numbers, a missing price
    0.0), so a wrong shape or a misspelt key is refused when the scorer is built instead of erroring or
    costing 0.0 on every case. Raises :class:`ScorerConfigError`."""
    if prices is None:
        return {}
    if not isinstance(prices, Mapping):
        raise ScorerConfigError(
            f"cost: prices must map a variant name (or 'default') to {{input_per_1k, output_per_1k}}, "
            f"got {type(prices).__name__}"
        )
    tables: dict[str, dict[str, float]] = {}
    for name, table in prices.items():
        try:
            tables[str(name)] = PriceTable.model_validate(table).model_dump()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in (name, *first["loc"]))
            raise ScorerConfigError(f"cost: prices.{where}: {first['msg']}") from None
    return tables


@register_scorer("error", bounds=UNIT_INTERVAL)
def error() -> RowScorer:
    """1.0 when the case errored or timed out, else 0.0."""

    def score(_i: Mapping[str, Any], outputs: Mapping[str, Any], _e: Mapping[str, Any]) -> float:
        return float(_failed(outputs))

    return score


DEFAULT_RUBRIC = (
    "You grade a customer-support agent's answer. Score 1.0 when it answers the user's question correctly "
    "and states every expected fact, 0.0 when it is wrong or unhelpful, partial credit in between. "
    'Reply with JSON only: {"score": <number between 0 and 1>, "rationale": "<one sentence>"}.'
)


def judge_chat_url(base_url: str) -> str:
    """Where the judge posts: ``<base_url>/chat/completions``, as OpenAI clients take a base URL (with its
    API prefix, e.g. ``http://127.0.0.1:8080/v1``). A bare server root gets ``/v1``, as a model package's
    ``base_url`` does: that is the URL the README's model example shows, and it would 404 on every row."""
    root = base_url.rstrip("/")
    path = root.split("://", 1)[-1].partition("/")[2]
    return root + ("/chat/completions" if path else "/v1/chat/completions")


@register_scorer("llm_judge", bounds=UNIT_INTERVAL)
def llm_judge(
    base_url: str,
    model: str,
    api_key_env: str | None = None,
    rubric: str = DEFAULT_RUBRIC,
    timeout_s: float = 30.0,
    max_retries: int = 3,
) -> RowScorer:
    """A judge model behind an OpenAI-compatible ``/chat/completions`` grades the answer from 0 to 1."""
    _check_judge(base_url, model, api_key_env, rubric, timeout_s)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= 10:
        raise ScorerConfigError(
            f"llm_judge: max_retries must be a whole number from 0 to 10, got {max_retries!r}"
        )
    url = judge_chat_url(base_url)

    def score(
        inputs: Mapping[str, Any], outputs: Mapping[str, Any], expectations: Mapping[str, Any]
    ) -> float:
        if _failed(outputs):
            return 0.0
        headers = {}
        if api_key_env and os.environ.get(api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
        question = json.dumps(
            {
                "question": inputs.get("input"),
                "expected_facts": expectations.get("expected_facts") or [],
                "answer": outputs.get("answer"),
            }
        )
        body = {
            "model": model,
            "temperature": 0,
            "messages": [{"role": "system", "content": rubric}, {"role": "user", "content": question}],
        }
        response = post_with_retries(url, body, headers, timeout_s=timeout_s, max_retries=max_retries)
        return parse_judge_score(str(response.json()["choices"][0]["message"]["content"]))

    return score


# Longest wait between two judge calls, whatever the server's Retry-After asks for.
JUDGE_MAX_BACKOFF_S = 10.0


def post_with_retries(
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_retries: int,
    base_delay_s: float = 0.5,
) -> Any:
    """POST ``body`` to the judge, retrying throttling (429), 5xx answers and refused connections with
    full-jitter exponential backoff (or the server's ``Retry-After``, capped) up to ``max_retries`` times,
    as the agents' own model calls are: a hosted judge that throttles would otherwise cost rows their
    score. A read timeout is not retried (each try would wait ``timeout_s`` again). Returns the
    ``httpx.Response`` of the last try; raises ``httpx.HTTPStatusError`` if it is not a success."""
    import httpx

    for attempt in range(max_retries + 1):
        last = attempt == max_retries
        try:
            response = httpx.post(url, json=dict(body), headers=dict(headers), timeout=timeout_s)
        except httpx.ConnectError:
            if last:
                raise
            time.sleep(_backoff_s(attempt, base_delay_s, None))
            continue
        if last or not (response.status_code == 429 or response.status_code >= 500):
            break
        time.sleep(_backoff_s(attempt, base_delay_s, response.headers.get("Retry-After")))
    response.raise_for_status()
    return response


def _backoff_s(attempt: int, base_delay_s: float, retry_after: str | None) -> float:
    """Seconds before retry ``attempt + 1``: the server's ``Retry-After`` seconds if it gives a number, else
    full jitter over an exponential ceiling; at most :data:`JUDGE_MAX_BACKOFF_S` either way."""
    try:
        asked = float(retry_after) if retry_after is not None else None
    except ValueError:
        asked = None  # an HTTP date: fall back to our own backoff
    if asked is not None and math.isfinite(asked) and asked >= 0:
        return min(asked, JUDGE_MAX_BACKOFF_S)
    return random.uniform(0, min(JUDGE_MAX_BACKOFF_S, base_delay_s * 2**attempt))


def _check_judge(base_url: Any, model: Any, api_key_env: Any, rubric: Any, timeout_s: Any) -> None:
    """Refuse a judge that cannot answer when the scorer is built: every case would otherwise score a
    SCORER_ERROR (a judge unreachable for other reasons is still found only when it is called)."""
    if not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url):
        raise ScorerConfigError(
            f"llm_judge: base_url must be an http(s) URL of the judge server, got {base_url!r}"
        )
    if not isinstance(model, str) or not model.strip():
        raise ScorerConfigError(f"llm_judge: model must name the judge model, got {model!r}")
    if api_key_env is not None and not (isinstance(api_key_env, str) and os.environ.get(api_key_env)):
        raise ScorerConfigError(
            f"llm_judge: api_key_env names ${api_key_env}, which is not set: the judge would be called "
            "without its key"
        )
    if not isinstance(rubric, str) or not rubric.strip():
        raise ScorerConfigError("llm_judge: rubric must be non-empty text")
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= MAX_TIMEOUT_S
    ):
        raise ScorerConfigError(
            f"llm_judge: timeout_s must be seconds in (0, {MAX_TIMEOUT_S:g}], got {timeout_s!r}"
        )


def parse_judge_score(content: str) -> float:
    """The ``score`` from a judge reply (JSON, possibly wrapped in prose), a number from 0 to 1.

    A score outside [0, 1] (or NaN) raises instead of being clipped: it means the judge graded on another
    scale (7 out of 10 would become a perfect 1.0) or not at all, and its rows must show a scorer error."""
    match = re.search(r"\{.*\}", content, re.DOTALL)
    if match is None:
        raise ValueError(f"judge reply holds no JSON object: {content[:200]!r}")
    value = float(json.loads(match.group(0))["score"])
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"judge score {value!r} is outside 0..1 (reply: {content[:200]!r})")
    return value
