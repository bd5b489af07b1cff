"""Hang drill: the challenger never answers during evaluation.

The drill pipeline deploys the challenger with ``FaultSpec(hang=True)`` (the runtime accepts the request and
never responds) and a 5 s per-case timeout. What must hold: the run finishes on its own, every one of the
challenger's cases is an error row (none dropped, each with its trace), no traceback reaches the console,
the gate rejects the challenger, and the endpoint is exactly as before the run (champion 100%).
"""

from __future__ import annotations

import time

import pytest
from _drill import ENDPOINT, DrillProject, result_json

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Long enough for a champion call on a cold runtime (the first calls load the model) on a loaded 2-core machine;
# a 2 s timeout made the champion time out now and then there.
TIMEOUT_S = 5.0
N_CASES = 30


def test_hanging_challenger_is_timed_out_case_by_case_and_never_promoted(drill_project: DrillProject) -> None:
    drill_project.configure(
        {
            "deploy": {"faults": {"challenger": {"hang": True}}},
            # 16 in flight: the 30 hanging cases time out in two waves instead of four.
            "evaluate": {"timeout_s": TIMEOUT_S, "max_retries": 0, "concurrency": 16},
        }
    )
    started = time.monotonic()
    proc = drill_project.run()
    elapsed = time.monotonic() - started
    result = result_json(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, "the hung requests end quietly when the runtime stops"
    assert result["status"] == "succeeded"
    # Every challenger case errors, far above decide.max_error_rate: rule 1 of the gate rejects it.
    assert result["decision"] == "reject"
    print(f"hang drill: run finished in {elapsed:.1f} s, decision {result['decision']}")

    evaluation = drill_project.step_output(result["id"], "evaluate_variants")
    rows = {v: [r for r in evaluation["rows"] if r["variant"] == v] for v in ("champion", "challenger")}
    assert len(rows["challenger"]) == N_CASES == len({r["case_id"] for r in rows["challenger"]})
    assert len(rows["champion"]) == N_CASES
    assert all(r["error"] and "Timeout" in r["error"] for r in rows["challenger"]), rows["challenger"][:2]
    assert all(r["scores"].get("task_success") in (0.0, None) for r in rows["challenger"])
    assert all(r["trace_id"] for r in rows["challenger"]), "timed-out cases keep their trace"
    assert sum(r["error"] is not None for r in rows["champion"]) == 0
    challenger = next(v for v in evaluation["variants"] if v["variant"] == "challenger")
    assert challenger["cases_expected"] == N_CASES == challenger["cases_errored"]

    backend = drill_project.backend()
    state = backend.describe_endpoint(ENDPOINT)
    assert {v.name: v.current_weight for v in state.variants} == {"champion": 1.0, "challenger": 0.0}
    ledger = [e for e in backend.list_audit() if e.execution_id == result["id"]]
    assert "weights" not in [e.action for e in ledger], "no traffic was shifted"
    # A fresh registry: train_model approved the first champion; then the only decision is the gate's.
    assert [e.action for e in ledger] == ["approve_bootstrap", "reject"]
    packages = backend.list_packages("support-model")
    assert packages[-1].approval_status.value == "Rejected"
