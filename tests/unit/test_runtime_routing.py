"""Routing decisions: weights, TargetVariant, sticky sessions, shadows."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_release.pipelines.runtime.routing import RoutingError, RoutingTable, session_point
from agent_release.steps.backend import EndpointState, ModelSpec, VariantState

MODEL = ModelSpec(kind="python", options={"class_path": "m:M"})


def endpoint(weights: dict[str, float], shadows: dict[str, float] | None = None) -> EndpointState:
    variants = [
        VariantState(name=n, model=MODEL, package_arn=None, current_weight=w, desired_weight=w)
        for n, w in weights.items()
    ]
    variants += [
        VariantState(
            name=n,
            model=MODEL,
            package_arn=None,
            current_weight=0,
            desired_weight=0,
            shadow=True,
            shadow_sample_percent=p,
        )
        for n, p in (shadows or {}).items()
    ]
    return EndpointState(name="ep", status="InService", variants=tuple(variants), updated_at=0.0)


def test_weighted_draw_matches_shares() -> None:
    table = RoutingTable.build(endpoint({"a": 3.0, "b": 1.0, "c": 0.0}))
    rng = random.Random(7)
    counts = Counter(table.choose(rng=rng).name for _ in range(20_000))
    assert counts["c"] == 0
    assert abs(counts["a"] / 20_000 - 0.75) < 0.015


def test_zero_weight_variants_are_never_drawn_even_at_the_edges() -> None:
    table = RoutingTable.build(endpoint({"zero": 0.0, "one": 1.0, "tail": 0.0}))
    assert {table.at_point(p).name for p in (0.0, 0.5, 0.999999)} == {"one"}


def test_weights_near_the_float_maximum_keep_their_shares() -> None:
    # Their plain sum is infinite: every cumulative share was NaN and each draw went to the last variant,
    # here the one of weight 0.
    table = RoutingTable.build(endpoint({"a": 1.7e308, "b": 1.7e308, "c": 0.0}))
    assert table.cumulative == (0.5, 1.0, 1.0)
    rng = random.Random(3)
    counts = Counter(table.choose(rng=rng).name for _ in range(4000))
    assert counts["c"] == 0
    assert 1850 < counts["a"] < 2150


def test_target_variant_overrides_weights_and_rejects_unknown_or_shadow() -> None:
    table = RoutingTable.build(endpoint({"a": 1.0, "b": 0.0}, shadows={"s": 50.0}))
    assert table.choose(target_variant="b").name == "b"
    with pytest.raises(RoutingError, match="nope"):
        table.choose(target_variant="nope")
    with pytest.raises(RoutingError):
        table.choose(target_variant="s")


def test_session_routing_is_stable() -> None:
    table = RoutingTable.build(endpoint({"a": 1.0, "b": 1.0}))
    assert all(table.choose(session_id="abc").name == table.choose(session_id="abc").name for _ in range(10))
    names = Counter(table.choose(session_id=f"s{i}").name for i in range(2000))
    assert abs(names["a"] / 2000 - 0.5) < 0.05


@given(
    w_before=st.floats(min_value=0.01, max_value=0.99),
    w_after=st.floats(min_value=0.01, max_value=0.99),
)
def test_weight_change_moves_only_the_sessions_it_must(w_before: float, w_after: float) -> None:
    before = RoutingTable.build(endpoint({"champion": 1 - w_before, "challenger": w_before}))
    after = RoutingTable.build(endpoint({"champion": 1 - w_after, "challenger": w_after}))
    sessions = [f"user-{i}" for i in range(300)]
    moved = sum(before.choose(session_id=s).name != after.choose(session_id=s).name for s in sessions)
    # Consistent hashing over cumulative weights: the champion owns [0, 1 - w), the challenger [1 - w, 1), so
    # exactly the sessions whose point lies between the old and the new boundary move.
    low, high = sorted((1 - w_before, 1 - w_after))
    points_moved = sum(low <= session_point(s) < high for s in sessions)
    assert moved == points_moved
    if w_after >= w_before:
        assert all(
            after.choose(session_id=s).name == "challenger"
            for s in sessions
            if before.choose(session_id=s).name == "challenger"
        )


def test_shadow_sampling_rate() -> None:
    table = RoutingTable.build(endpoint({"a": 1.0}, shadows={"s": 25.0, "never": 0.0}))
    rng = random.Random(1)
    hits = Counter(v.name for _ in range(10_000) for v in table.shadows_for_request(rng))
    assert set(hits) == {"s"}
    assert abs(hits["s"] / 10_000 - 0.25) < 0.02


class FixedDraws(random.Random):
    """An rng whose every draw is ``value``: puts a request on a chosen side of a sampling boundary."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_shadow_sampling_uses_the_callers_rng_and_samples_draws_below_the_percent() -> None:
    # A shadow of p percent gets the copy exactly when the draw d has 100 * d < p, and the draw comes from the
    # rng the runtime passes (seeded runs sample reproducibly), never from the module-level generator.
    table = RoutingTable.build(endpoint({"a": 1.0}, shadows={"s": 25.0}))
    assert all([v.name for v in table.shadows_for_request(FixedDraws(0.2499))] == ["s"] for _ in range(50))
    assert all(table.shadows_for_request(FixedDraws(0.25)) == [] for _ in range(50))


def test_no_positive_weight_is_an_error() -> None:
    table = RoutingTable.build(endpoint({"a": 0.0}))
    with pytest.raises(RoutingError):
        table.choose()
