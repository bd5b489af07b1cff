"""Which variant answers a request: SageMaker's weighted routing, TargetVariant, sessions and shadows.

- Weighted: a production variant gets the share ``w / sum(w)`` of requests (shadow variants excluded).
- ``X-Amzn-SageMaker-Target-Variant`` names the variant explicitly (any production variant, even weight 0).
- ``X-Amzn-SageMaker-Session-Id``: the same session always lands on the same variant, so a conversation is
  never answered by a mix of models. The session id hashes to a fixed point in [0, 1) which is looked up in
  the cumulative weights: a session moves only when a weight change moves the interval boundary across its
  point (as few sessions as possible move). Clients can also pin a conversation with TargetVariant.
- Shadow variants get a sampled copy of requests (``shadow_sample_percent``); their answers are discarded.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass

from agent_release.steps.backend import EndpointState, VariantState


class RoutingError(ValueError):
    """The request names a variant the endpoint does not have (answered as ValidationError)."""


def session_point(session_id: str) -> float:
    """A stable point in [0, 1) for ``session_id`` (same id, same point, in every process)."""
    digest = hashlib.blake2b(session_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class RoutingTable:
    """The routing decision data of one endpoint, rebuilt whenever the endpoint changes."""

    endpoint: EndpointState
    production: tuple[VariantState, ...]
    cumulative: tuple[float, ...]
    shadows: tuple[VariantState, ...]
    by_name: dict[str, VariantState]

    @classmethod
    def build(cls, endpoint: EndpointState) -> RoutingTable:
        """Precompute cumulative weights of ``endpoint``'s production variants (zero weights get no share)."""
        production = tuple(v for v in endpoint.variants if not v.shadow)
        # Weights relative to the largest: SageMaker bounds a weight below only, and the plain sum of two
        # weights near the float maximum is infinite (every share NaN, all traffic to the last variant).
        largest = max((v.current_weight for v in production), default=0.0)
        shares = [max(v.current_weight, 0.0) / largest if largest > 0 else 0.0 for v in production]
        total = sum(shares)
        cumulative: list[float] = []
        running = 0.0
        for share in shares:
            running += share
            cumulative.append(running / total if total > 0 else 0.0)
        return cls(
            endpoint=endpoint,
            production=production,
            cumulative=tuple(cumulative),
            shadows=tuple(v for v in endpoint.variants if v.shadow and v.shadow_sample_percent > 0),
            by_name={v.name: v for v in endpoint.variants},
        )

    def at_point(self, point: float) -> VariantState:
        """The production variant whose cumulative-weight interval contains ``point`` in [0, 1)."""
        if not self.production or self.cumulative[-1] <= 0:
            raise RoutingError(f"endpoint {self.endpoint.name!r} has no production variant with weight > 0")
        # bisect_right skips zero-width intervals, so a zero-weight variant is never chosen by weight.
        index = bisect.bisect_right(self.cumulative, point)
        return self.production[min(index, len(self.production) - 1)]

    def choose(
        self,
        target_variant: str | None = None,
        session_id: str | None = None,
        rng: random.Random | None = None,
    ) -> VariantState:
        """The variant for one request: TargetVariant, else the session's variant, else a weighted draw."""
        if target_variant:
            variant = self.by_name.get(target_variant)
            if variant is None or variant.shadow:
                names = ", ".join(v.name for v in self.production)
                raise RoutingError(
                    f"endpoint {self.endpoint.name!r} has no production variant {target_variant!r} "
                    f"(variants: {names})"
                )
            return variant
        if session_id:
            return self.at_point(session_point(session_id))
        return self.at_point((rng or random).random())

    def shadows_for_request(self, rng: random.Random | None = None) -> list[VariantState]:
        """The shadow variants that receive a copy of this request (each sampled independently)."""
        draw = (rng or random).random
        return [v for v in self.shadows if draw() * 100.0 < v.shadow_sample_percent]
