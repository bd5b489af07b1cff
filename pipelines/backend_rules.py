"""Rules both backends share, so local runs and SageMaker behave the same way.

- :func:`validate_endpoint_spec` and :func:`validate_weights`: what CreateEndpoint and
  UpdateEndpointWeightsAndCapacities accept (names, at least one positive production weight).
- :func:`canonical_json`, :func:`audit_hash`, :data:`GENESIS_HASH`: the audit ledger's hash chain, identical
  in SQLite (local) and S3 (SageMaker), so ``audit verify`` means the same thing on both.
- :func:`missing_entries`, :func:`head_mismatch`: what ``verify_audit`` says of a gap in the seqs and of a
  ledger that does not reach (or hold) the entry its recorded head names.
- :func:`read_evidence`, :data:`DAMAGED_EVIDENCE_KEY`: how a ledger reader treats an entry whose evidence is
  not a JSON object, so a damaged entry is listed (flagged) and named by ``verify_audit`` on both.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agent_release.steps.backend import BackendError, EndpointState, VariantSpec

# prev_hash of the first ledger entry.
GENESIS_HASH = "0" * 64
# Evidence of a ledger entry whose stored evidence does not read as a JSON object: the stored text under this
# key, so listing the ledger still works; ``verify_audit`` reports the entry as damaged.
DAMAGED_EVIDENCE_KEY = "damaged_evidence_json"


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): the bytes the audit hash is computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def audit_hash(fields: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of an entry's fields (``prev_hash`` included, ``hash`` excluded)."""
    payload = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def missing_entries(expected_seq: int, found_seq: int) -> str | None:
    """The ``verify_audit`` problem when the ledger jumps from ``expected_seq`` to ``found_seq`` (None if not):
    "entry 3 is missing (next entry found is 4)", or "entries 3-5 are missing (...)" for a run of them."""
    if found_seq <= expected_seq:
        return None
    which = (
        f"entry {expected_seq} is"
        if found_seq == expected_seq + 1
        else f"entries {expected_seq}-{found_seq - 1} are"
    )
    return f"{which} missing (next entry found is {found_seq})"


def head_mismatch(head_seq: int, head_hash: str, entries: Sequence[tuple[int, str | None]]) -> str | None:
    """The ``verify_audit`` problem when the ledger's ``entries`` ((seq, hash), oldest first; hash None for an
    entry that does not read) do not reach, or do not hold, the entry its recorded head names; None if not.

    The head is read before the entries and moves only after an entry is stored, so entries after the one it
    names are newer appends (their chain is checked entry by entry), not a problem. Seq 0 with the genesis
    hash is the head written before the first entry.
    """
    if head_seq < 0:
        return f"the ledger's recorded head names entry {head_seq}, which no ledger has (edited)"
    if head_seq == 0:
        return (
            None
            if head_hash == GENESIS_HASH
            else "the ledger's recorded head names entry 0 with a hash other than the genesis (edited)"
        )
    last_seq = entries[-1][0] if entries else 0
    if last_seq < head_seq:
        return f"ledger ends at entry {last_seq} but its recorded head is entry {head_seq}"
    for seq, digest in entries:
        if seq == head_seq:
            # An unreadable entry's hash is unknown; it is reported as damaged already.
            if digest is not None and digest != head_hash:
                return f"entry {seq} is not the entry the ledger's recorded head names (replaced or edited)"
            return None
    return None  # removed from the middle: reported as a gap already


def read_evidence(stored: Any) -> tuple[dict[str, Any], str | None]:
    """A ledger entry's evidence from its stored JSON text, and why it is damaged (None when it reads).

    Evidence that is not valid JSON, or not a JSON object, comes back as ``{DAMAGED_EVIDENCE_KEY: <the text>}``
    with the reason, which ``verify_audit`` words as "entry N is damaged or was edited: <reason>".
    """
    try:
        evidence = json.loads(stored)
    except (TypeError, ValueError) as exc:
        return {DAMAGED_EVIDENCE_KEY: str(stored)}, f"its evidence is not valid JSON ({exc})"
    if not isinstance(evidence, dict):
        return {DAMAGED_EVIDENCE_KEY: str(stored)}, (
            f"its evidence is {type(evidence).__name__}, not a JSON object"
        )
    return evidence, None


def validate_weights(state: EndpointState, weights: Mapping[str, float]) -> dict[str, float]:
    """New weights for every variant of ``state`` after applying ``weights``; raises BackendError if invalid.

    Rules (as UpdateEndpointWeightsAndCapacities): names must be deployed variants, weights finite and >= 0,
    and at least one production variant keeps a positive weight.
    """
    known = {v.name: v.current_weight for v in state.variants}
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise BackendError(
            f"endpoint {state.name!r} has no variant {', '.join(unknown)} (variants: {', '.join(known)})"
        )
    for name, weight in weights.items():
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise BackendError(f"weight of variant {name!r} must be a finite number >= 0, got {weight!r}")
    merged = {**known, **{k: float(v) for k, v in weights.items()}}
    if not any(merged[v.name] > 0 for v in state.variants if not v.shadow):
        raise BackendError(f"endpoint {state.name!r} needs at least one production variant with weight > 0")
    return merged


def is_sagemaker_name(name: str) -> bool:
    """Whether SageMaker accepts ``name`` for an endpoint, a production variant or a model package group:
    letters, digits and hyphens, starting and ending with a letter or digit, at most 63 characters."""
    return len(name) <= 63 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", name) is not None


def check_package_group_name(group: str) -> None:
    """Raise BackendError unless SageMaker would accept ``group`` as a model package group name."""
    if not is_sagemaker_name(group):
        raise BackendError(
            f"invalid model package group name {group!r}: letters, digits and hyphens (max 63)"
        )


def validate_endpoint_spec(name: str, variants: Sequence[VariantSpec]) -> None:
    """Rules both backends apply before creating or updating an endpoint; raises BackendError if broken."""
    if not is_sagemaker_name(name):
        raise BackendError(f"invalid endpoint name {name!r}: use letters, digits and hyphens (max 63)")
    if not variants:
        raise BackendError(f"endpoint {name!r} needs at least one variant")
    names = [v.name for v in variants]
    for variant in names:
        if not is_sagemaker_name(variant):
            raise BackendError(
                f"invalid variant name {variant!r} on endpoint {name!r}: use letters, digits and hyphens (max 63)"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BackendError(f"endpoint {name!r} has duplicate variant names: {', '.join(duplicates)}")
    if not any(v.initial_weight > 0 for v in variants if not v.shadow):
        raise BackendError(f"endpoint {name!r} needs at least one production variant with weight > 0")
