"""The local executor: dependency order, persistence, failure recording and resume without redoing steps."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent_release.pipelines.executor import (
    ExecutionStore,
    LocalExecutor,
    StepDef,
    StepRun,
    topological_order,
)


class Out(BaseModel):
    value: int


class Decision(BaseModel):
    decision: str


def make_steps(calls: list[str], fail_at: set[str]) -> list[StepDef]:
    def runner(name: str, value: int):  # type: ignore[no-untyped-def]
        def run(r: StepRun) -> BaseModel:
            calls.append(name)
            if name in fail_at:
                raise RuntimeError(f"{name} broke\ndetails on a second line")
            upstream = sum(o.value for o in r.outputs.values() if isinstance(o, Out))
            return Out(value=upstream + value)

        return run

    def decide(r: StepRun) -> BaseModel:
        calls.append("decide")
        return Decision(decision="promote" if r.output("c").value > 3 else "reject")

    return [
        # Deliberately out of order: the executor sorts by dependencies.
        StepDef("c", ("b",), Out, runner("c", 3)),
        StepDef("a", (), Out, runner("a", 1)),
        StepDef("b", ("a",), Out, runner("b", 2)),
        StepDef("decide", ("c",), Decision, decide),
    ]


def test_topological_order_and_cycle_detection() -> None:
    steps = make_steps([], set())
    assert [s.name for s in topological_order(steps)] == ["a", "b", "c", "decide"]
    cyclic = [StepDef("x", ("y",), Out, lambda r: None), StepDef("y", ("x",), Out, lambda r: None)]
    with pytest.raises(ValueError, match="cycle"):
        topological_order(cyclic)
    with pytest.raises(ValueError, match="unknown step"):
        topological_order([StepDef("x", ("nope",), Out, lambda r: None)])


def test_runs_in_order_and_persists_outputs(tmp_path: Path) -> None:
    calls: list[str] = []
    store = ExecutionStore(tmp_path)
    steps = make_steps(calls, set())
    ex = LocalExecutor(store)
    eid = ex.start("p", tmp_path / "pipeline.yaml", "name: p", steps)
    result = ex.run(eid, steps, context=None)
    assert result.status == "succeeded"
    assert calls == ["a", "b", "c", "decide"]
    # a = 1, b = a + 2 = 3, c = (a + b) + 3 = 7 > 3
    assert result.decision == "promote"
    rows = {r["name"]: r for r in store.steps(eid)}
    assert all(r["status"] == "succeeded" for r in rows.values())
    assert store.step_output(eid, "a") == {"value": 1}
    assert store.execution(eid)["decision"] == result.decision


def test_failure_is_recorded_and_resume_skips_finished_steps(tmp_path: Path) -> None:
    calls: list[str] = []
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    failing = make_steps(calls, {"c"})
    eid = ex.start("p", tmp_path / "pipeline.yaml", "name: p", failing)
    first = ex.run(eid, failing, context=None)
    assert first.status == "failed"
    assert first.error == "c: c broke"  # one line, prefixed with the step
    assert store.execution(eid)["error"] == "c: c broke"
    # The step's own record keeps the rest of the message, on one line.
    failed_step = next(r for r in store.steps(eid) if r["name"] == "c")
    assert failed_step["error"] == "c broke\\ndetails on a second line"
    assert calls == ["a", "b", "c"]
    assert store.execution(eid)["status"] == "failed"

    calls.clear()
    fixed = make_steps(calls, set())
    second = ex.run(eid, fixed, context=None, resume=True)
    assert second.status == "succeeded"
    assert calls == ["c", "decide"], "finished steps must not run again on resume"
    assert second.reused == ["a", "b"]
    # Upstream outputs were restored from the store with their types.
    assert store.step_output(eid, "c") == {"value": 7}
    attempts = {r["name"]: r["attempts"] for r in store.steps(eid)}
    assert attempts == {"a": 1, "b": 1, "c": 2, "decide": 1}


def _two_failed_executions(ex: LocalExecutor, tmp_path: Path) -> tuple[str, str]:
    """(older, newer): two executions that failed, at step c and at step a."""
    older = ex.start("p", tmp_path / "pipeline.yaml", "name: p", make_steps([], set()))
    assert ex.run(older, make_steps([], {"c"}), context=None).status == "failed"
    newer = ex.start("p", tmp_path / "pipeline.yaml", "name: p", make_steps([], set()))
    assert ex.run(newer, make_steps([], {"a"}), context=None).status == "failed"
    return older, newer


def test_a_resumed_older_execution_is_the_latest(tmp_path: Path) -> None:
    # Ordered by start, `status` showed the newer execution after an older one was resumed (and `promote`
    # looked for a held execution in the wrong one).
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    older, newer = _two_failed_executions(ex, tmp_path)
    assert store.latest()["id"] == newer
    assert [r["id"] for r in store.recent()] == [newer, older]

    assert ex.run(older, make_steps([], set()), context=None, resume=True).status == "succeeded"
    assert store.latest()["id"] == older
    assert [r["id"] for r in store.recent()] == [older, newer]


def test_skipped_step_lets_dependents_run(tmp_path: Path) -> None:
    calls: list[str] = []

    def run_x(r: StepRun) -> BaseModel:
        calls.append("x")
        return Out(value=1)

    def run_opt(r: StepRun) -> BaseModel:
        calls.append("opt")
        return Out(value=5)

    def run_y(r: StepRun) -> BaseModel:
        calls.append("y")
        assert r.maybe("opt") is None
        return Out(value=r.output("x").value + 1)

    steps = [
        StepDef("x", (), Out, run_x),
        StepDef("opt", ("x",), Out, run_opt, when=lambda r: False),
        StepDef("y", ("x", "opt"), Out, run_y),
    ]
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    eid = ex.start("p", tmp_path / "p.yaml", "", steps)
    result = ex.run(eid, steps, context=None)
    assert result.status == "succeeded"
    assert calls == ["x", "y"]
    assert result.skipped == ["opt"]
    assert {r["name"]: r["status"] for r in store.steps(eid)}["opt"] == "skipped"


def test_resume_refuses_an_execution_a_later_run_redeployed_over(tmp_path: Path) -> None:
    # Resuming it reused its own stored deployment: after a later run promoted, the resume evaluated and
    # promoted again (sending 50% of traffic back to the demoted model), and with the endpoint changed
    # further it Rejected the package serving all of production.
    import time as clock

    from agent_release.pipelines.dag import pipeline_steps
    from agent_release.pipelines.executor import ExecutionSuperseded
    from agent_release.pipelines.local_run import load_for_run

    root = Path(__file__).resolve().parents[2]
    text = (root / "pipeline.yaml").read_text()
    other_endpoint = text.replace("endpoint_name: support-agent", "endpoint_name: other-agent", 1)
    assert other_endpoint != text
    store = ExecutionStore(tmp_path)
    steps = pipeline_steps()
    interrupted = store.create("p", root / "pipeline.yaml", text, steps)
    store.mark_step(interrupted, "deploy_variants", "succeeded")

    def later(config_text: str, deployed: bool) -> str:
        clock.sleep(0.01)  # started after: executions are ordered by their start
        execution = store.create("p", root / "pipeline.yaml", config_text, steps)
        if deployed:
            store.mark_step(execution, "deploy_variants", "succeeded")
        return execution

    later(text, deployed=False)  # failed before deploying: it changed nothing
    later(other_endpoint, deployed=True)  # another endpoint
    assert (
        load_for_run(root / "pipeline.yaml", store, interrupted).config.deploy.endpoint_name
        == "support-agent"
    )
    superseding = later(text, deployed=True)
    with pytest.raises(ExecutionSuperseded) as refused:
        load_for_run(root / "pipeline.yaml", store, interrupted)
    assert str(refused.value) == (
        f"execution {interrupted} was superseded: execution {superseding}, started after it, deployed to "
        "endpoint support-agent; resuming would act on the deployment it replaced. Start a new run "
        "(`agent-release run`)"
    )
    store.close()


def test_a_resume_refuses_a_prompt_or_tool_data_edited_after_registration(tmp_path: Path) -> None:
    # The resumed execution reused its registration (prompt v1, the tool data's sha256 in the LoggedModel)
    # but evaluated and shifted traffic with the edited prompt or data: evidence credited to an agent
    # version that never ran.
    from _report_fixtures import registration_report
    from _shared.cli import copy_project

    from agent_release.agents.builder import toolset_data_sha256
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.dag import check_agent_parts
    from agent_release.pipelines.executor import StepFailed
    from agent_release.steps.register_agents import load_system_prompt, text_sha256

    project = copy_project(tmp_path / "project", copy_datasets=True)
    (project / "prompt.md").write_text("You are a support agent.\n")
    config_path = project / "pipeline.yaml"
    config_path.write_text(
        config_path.read_text().replace(
            "  toolset: support\n", "  toolset: support\n  system_prompt_file: prompt.md\n"
        )
    )
    loaded = load_config(config_path)
    registered = registration_report(tmp_path)
    pinned = {
        "system_prompt_sha256": text_sha256(load_system_prompt(loaded.config.agent, project)),
        "tool_data_sha256": toolset_data_sha256("support", project / "datasets" / "support"),
    }
    report = registered.model_copy(
        update={"agents": tuple(a.model_copy(update=pinned) for a in registered.agents)}
    )
    run = StepRun(execution_id="e", outputs={"register_agents": report}, context=None)
    check_agent_parts(run, loaded)  # nothing changed

    (project / "prompt.md").write_text("You are a support agent. Always answer in French.\n")
    with pytest.raises(StepFailed, match=r"^the system prompt \(sha256 \w{12}, now \w{12}\) changed after"):
        check_agent_parts(run, loaded)
    (project / "prompt.md").write_text("You are a support agent.\n")
    policy = project / "datasets" / "support" / "policy.json"
    policy.write_text(policy.read_text().replace('"return_window_days": 30', '"return_window_days": 7'))
    with pytest.raises(StepFailed, match=r"^the tool data in datasets/support \(sha256 .*start a new run"):
        check_agent_parts(run, loaded)


def test_training_holds_its_package_group_against_a_run_for_another_endpoint(tmp_path: Path) -> None:
    # The endpoint lock keeps apart only runs of one endpoint: two pipelines sharing a package group trained
    # at once, and both listed the group before either registered (two packages of one model, two bootstrap
    # champions). The train step now takes the group's lock; a contender is told who holds it.
    from _shared.cli import copy_project

    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.dag import RunContext, pipeline_steps
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.steps.backend import LockBusyError

    loaded = load_config(copy_project(tmp_path / "project") / "pipeline.yaml")
    train = loaded.config.train
    assert train is not None
    backend = LocalBackend(tmp_path / "state")
    other = LocalBackend(tmp_path / "state")
    step = next(s for s in pipeline_steps() if s.name == "train_model")
    context = RunContext(
        loaded=loaded, backend=backend, state_dir=tmp_path / "state", tracking_uri="sqlite://"
    )
    try:
        held = other.lock(f"package_group:{train.package_group}", "run of other-endpoint")
        with held, pytest.raises(LockBusyError, match="run of other-endpoint"):
            step.run(StepRun(execution_id="e", outputs={}, context=context))
        assert backend.list_packages(train.package_group) == []  # nothing registered while it was held
    finally:
        backend.close()
        other.close()


def test_steps_are_listed_in_dag_order_not_by_name(tmp_path: Path) -> None:
    # `status` and `report` list an execution's steps through store.steps(); names sorted otherwise.
    steps = [
        StepDef("validate", (), Out, lambda r: Out(value=1)),
        StepDef("deploy", ("validate",), Out, lambda r: Out(value=2)),
        StepDef("assess", ("deploy",), Out, lambda r: Out(value=3)),
    ]
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    eid = ex.start("p", tmp_path / "p.yaml", "", steps)
    assert [r["name"] for r in store.steps(eid)] == ["validate", "deploy", "assess"]
    assert ex.run(eid, steps, context=None).ran == ["validate", "deploy", "assess"]


def test_an_attempt_counts_when_the_step_starts_and_a_skipped_step_has_none(tmp_path: Path) -> None:
    # A step killed mid-run has its attempt counted already (docs/reliability.md: "Attempts: 2 for the
    # three re-run steps"); a step that never ran has made no attempt.
    store = ExecutionStore(tmp_path)
    seen: dict[str, tuple[str, int]] = {}

    def run_a(r: StepRun) -> BaseModel:
        row = next(s for s in store.steps(r.execution_id) if s["name"] == "a")
        seen["a"] = (row["status"], row["attempts"])
        return Out(value=1)

    steps = [
        StepDef("a", (), Out, run_a),
        StepDef("off", ("a",), Out, lambda r: Out(value=2), when=lambda r: False),
        StepDef("nothing", ("a",), Out, lambda r: None),
    ]
    ex = LocalExecutor(store)
    eid = ex.start("p", tmp_path / "p.yaml", "", steps)
    ex.run(eid, steps, context=None)
    assert seen["a"] == ("running", 1)
    rows = {r["name"]: (r["status"], r["attempts"]) for r in store.steps(eid)}
    assert rows == {"a": ("succeeded", 1), "off": ("skipped", 0), "nothing": ("skipped", 1)}


def test_a_failure_after_the_decision_keeps_the_decision_on_the_execution(tmp_path: Path) -> None:
    # `status` shows the gate's decision of a run whose promotion then failed.
    def promote(r: StepRun) -> BaseModel:
        assert store.execution(r.execution_id)["decision"] == "promote"  # recorded as the gate decided
        raise RuntimeError("endpoint unavailable")

    steps = [
        StepDef("decide", (), Decision, lambda r: Decision(decision="promote")),
        StepDef("promote", ("decide",), Out, promote),
    ]
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    eid = ex.start("p", tmp_path / "p.yaml", "", steps)
    result = ex.run(eid, steps, context=None)
    assert (result.status, result.error) == ("failed", "promote: endpoint unavailable")
    row = store.execution(eid)
    assert (row["status"], row["decision"], row["error"]) == (
        "failed",
        "promote",
        "promote: endpoint unavailable",
    )
    # The resume reuses the gate's stored decision and reports it as the run's.
    fixed = [steps[0], StepDef("promote", ("decide",), Out, lambda r: Out(value=1))]
    resumed = ex.run(eid, fixed, context=None, resume=True)
    assert (resumed.status, resumed.reused, resumed.decision) == ("succeeded", ["decide"], "promote")
    assert resumed.outputs == {"decide": Decision(decision="promote"), "promote": Out(value=1)}
    assert store.execution(eid)["decision"] == "promote"


@pytest.mark.parametrize("interruption", ["failed", "ctrl-c"])
def test_a_resume_reopens_the_execution_under_this_process_and_requeues_the_unfinished_step(
    tmp_path: Path, interruption: str
) -> None:
    # While a resume reuses the finished steps, `status` must see a running execution of this process (not
    # the old error or a dead pid), and the step that failed or was interrupted waiting to run again.
    def run_b(r: StepRun) -> BaseModel:
        if interruption == "failed":
            raise RuntimeError("b broke")
        raise KeyboardInterrupt  # not caught: the step stays `running`, as after a kill

    store = ExecutionStore(tmp_path)
    steps = [StepDef("a", (), Out, lambda r: Out(value=1)), StepDef("b", ("a",), Out, run_b)]
    eid = LocalExecutor(store).start("p", tmp_path / "p.yaml", "", steps)
    if interruption == "failed":
        assert LocalExecutor(store).run(eid, steps, context=None).status == "failed"
    else:
        with pytest.raises(KeyboardInterrupt):
            LocalExecutor(store).run(eid, steps, context=None)
    assert {r["name"]: r["status"] for r in store.steps(eid)}["b"] == interruption.replace(
        "ctrl-c", "running"
    )
    with sqlite3.connect(tmp_path / "state.db") as conn:  # as if another process had run it
        conn.execute("UPDATE executions SET pid = ? WHERE id = ?", (os.getpid() + 100_000, eid))

    during: dict[str, object] = {}

    def observe(step: str, event: str, info: object) -> None:
        if (step, event) == ("a", "reused"):
            row = store.execution(eid)
            during["execution"] = (row["status"], row["error"], row["finished_at"], row["pid"])
            during["steps"] = {r["name"]: r["status"] for r in store.steps(eid)}

    fixed = [steps[0], StepDef("b", ("a",), Out, lambda r: Out(value=2))]
    assert (
        LocalExecutor(store, observer=observe).run(eid, fixed, context=None, resume=True).status
        == "succeeded"
    )
    assert during == {
        "execution": ("running", None, None, os.getpid()),
        "steps": {"a": "succeeded", "b": "pending"},
    }
    assert store.execution(eid)["pid"] == os.getpid()


def test_the_observer_hears_each_step_event_in_order(tmp_path: Path) -> None:
    # The console prints the run from these events (`run`'s lines, "already done (resumed)" on resume).
    events: list[tuple[str, str]] = []
    infos: dict[tuple[str, str], dict[str, object]] = {}

    def observe(step: str, event: str, info: Mapping[str, object]) -> None:
        events.append((step, event))
        infos[(step, event)] = dict(info)

    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store, observer=observe)
    failing = make_steps([], {"c"})
    eid = ex.start("p", tmp_path / "p.yaml", "", failing)
    ex.run(eid, failing, context=None)
    assert events == [
        ("a", "started"), ("a", "succeeded"), ("b", "started"), ("b", "succeeded"), ("c", "started"),
        ("c", "failed"),
    ]  # fmt: skip
    assert infos[("c", "failed")] == {"error": "c broke"}
    assert infos[("a", "succeeded")]["output"] == Out(value=1)
    assert 0 <= infos[("a", "succeeded")]["seconds"] < 60
    events.clear()
    ex.run(eid, make_steps([], set()), context=None, resume=True)
    assert events == [
        ("a", "reused"), ("b", "reused"), ("c", "started"), ("c", "succeeded"), ("decide", "started"),
        ("decide", "succeeded"),
    ]  # fmt: skip


def test_a_run_if_that_says_no_skips_the_step_with_its_note(tmp_path: Path) -> None:
    # The run-time condition (e.g. "a challenger was deployed"), checked when the step is due: the skip note
    # is what `status` and the console show as the reason.
    calls: list[str] = []
    events: list[tuple[str, str, object]] = []

    def step(name: str, value: int):  # type: ignore[no-untyped-def]
        def run(r: StepRun) -> BaseModel:
            calls.append(name)
            return Out(value=value)

        return run

    steps = [
        StepDef("deploy", (), Out, step("deploy", 0)),
        StepDef(
            "evaluate",
            ("deploy",),
            Out,
            step("evaluate", 1),
            run_if=lambda r: r.output("deploy").value > 0,
            skip_note="no challenger deployed",
        ),
        StepDef(
            "report", ("deploy",), Out, step("report", 2), run_if=lambda r: r.output("deploy").value == 0
        ),
    ]
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store, observer=lambda s, e, i: events.append((s, e, dict(i))))
    eid = ex.start("p", tmp_path / "p.yaml", "", steps)
    result = ex.run(eid, steps, context=None)
    assert (result.status, calls, result.skipped) == ("succeeded", ["deploy", "report"], ["evaluate"])
    assert ("evaluate", "skipped", {"reason": "no challenger deployed"}) in events
    row = next(r for r in store.steps(eid) if r["name"] == "evaluate")
    assert (row["status"], row["error"]) == ("skipped", "no challenger deployed")


def test_a_resume_neither_reruns_a_skipped_step_nor_loses_it_for_its_dependents(tmp_path: Path) -> None:
    # A step that returned None (nothing to do) is finished: the resume must not run it again, and a
    # dependent that failed the first time still runs (a skipped upstream is not a missing one).
    calls: list[str] = []
    broken = {"y": True}

    def run_y(r: StepRun) -> BaseModel:
        calls.append("y")
        if broken["y"]:
            raise RuntimeError("y broke")
        assert r.maybe("nothing") is None
        return Out(value=r.output("x").value + 1)

    def nothing(r: StepRun) -> None:  # nothing to do: the step is recorded skipped
        calls.append("nothing")

    steps = [
        StepDef("x", (), Out, lambda r: Out(value=1)),
        StepDef("nothing", ("x",), Out, nothing),
        StepDef("off", ("x",), Out, lambda r: Out(value=5), when=lambda r: False),
        StepDef("y", ("x", "nothing", "off"), Out, run_y),
    ]
    store = ExecutionStore(tmp_path)
    events: list[tuple[str, str]] = []
    ex = LocalExecutor(store, observer=lambda s, e, i: events.append((s, e)))
    eid = ex.start("p", tmp_path / "p.yaml", "", steps)
    assert ex.run(eid, steps, context=None).status == "failed"
    assert calls == ["nothing", "y"]
    assert [e for e in events if e[1] == "skipped"] == [("nothing", "skipped"), ("off", "skipped")]
    calls.clear()
    events.clear()
    broken["y"] = False
    resumed = ex.run(eid, steps, context=None, resume=True)
    assert (resumed.status, calls) == ("succeeded", ["y"])
    assert (resumed.reused, resumed.skipped, resumed.ran) == (["x"], ["nothing", "off"], ["y"])
    assert [e for e in events if e[1] == "skipped"] == []  # already recorded: not skipped a second time
    assert store.step_output(eid, "y") == {"value": 2}


def test_a_step_that_finds_the_database_locked_is_recorded_with_the_lock_message(tmp_path: Path) -> None:
    # docs/reliability.md, "Locked state database": the step's record and the run's error name the
    # database and say to retry, instead of "OperationalError: database is locked".
    def locked(r: StepRun) -> BaseModel:
        raise sqlite3.OperationalError("database is locked")

    steps = [StepDef("deploy", (), Out, locked)]
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    eid = ex.start("p", tmp_path / "p.yaml", "", steps)
    result = ex.run(eid, steps, context=None)
    prefix = f"state database {tmp_path / 'state.db'} is locked by another process"
    assert result.status == "failed" and result.error is not None
    assert result.error.startswith(f"deploy: {prefix}") and result.error.endswith(
        "retry when it has finished"
    )
    assert store.execution(eid)["error"] == result.error
    assert store.steps(eid)[0]["error"] == result.error.removeprefix("deploy: ")


def test_a_resumed_execution_is_the_latest_while_its_steps_run(tmp_path: Path) -> None:
    # Its finish time is cleared by the resume: its steps' starts say it is the one doing something.
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    older, newer = _two_failed_executions(ex, tmp_path)
    seen: list[tuple[str, list[str]]] = []
    steps = make_steps([], set())
    c = next(s for s in steps if s.name == "c")

    def run_c(r: StepRun) -> BaseModel:
        seen.append((store.latest()["id"], [row["id"] for row in store.recent()]))
        return c.run(r)

    steps = [s if s.name != "c" else StepDef("c", c.needs, Out, run_c) for s in steps]
    assert ex.run(older, steps, context=None, resume=True).status == "succeeded"
    assert seen == [(older, [older, newer])]


@pytest.mark.parametrize("steps", [["a"], []], ids=["no step started", "no steps"])
def test_an_execution_that_did_nothing_is_not_the_latest_after_a_newer_one_ran(
    tmp_path: Path, steps: list[str]
) -> None:
    # Killed before its first step (still `running`, no finish time): its start is its last activity.
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    idle = store.create(
        "p", tmp_path / "p.yaml", "", [StepDef(n, (), Out, lambda r: Out(value=1)) for n in steps]
    )
    ran_steps = make_steps([], set())
    ran = ex.start("p", tmp_path / "p.yaml", "", ran_steps)
    assert ex.run(ran, ran_steps, context=None).status == "succeeded"
    assert store.execution(idle)["status"] == "running"
    assert store.latest()["id"] == ran
    assert [r["id"] for r in store.recent()] == [ran, idle]


def test_recent_lists_the_twenty_most_recent_executions_by_default(tmp_path: Path) -> None:
    store = ExecutionStore(tmp_path)
    ids = [store.create("p", tmp_path / "p.yaml", "", []) for _ in range(21)]
    assert [r["id"] for r in store.recent()] == ids[:0:-1]
    assert [r["id"] for r in store.recent(limit=2)] == [ids[-1], ids[-2]]


def test_step_outputs_lists_executions_whose_step_succeeded_with_an_output_newest_first(
    tmp_path: Path,
) -> None:
    store = ExecutionStore(tmp_path)
    steps = [StepDef("s", (), Out, lambda r: Out())]
    made: dict[str, list[str]] = {}
    statuses = ("succeeded", "skipped", "succeeded", "failed", "succeeded-no-output", "pending")
    for n, status in enumerate(statuses):
        execution = store.create("p", tmp_path / "p.yaml", "", steps)
        if status == "succeeded-no-output":
            store.mark_step(execution, "s", "succeeded")
        elif status != "pending":
            store.mark_step(execution, "s", status, output_json=f'{{"n": {n}}}')  # type: ignore[arg-type]
        made.setdefault(status, []).append(execution)
    older, newer = made["succeeded"]
    assert list(store.step_outputs("s")) == [(newer, {"n": 2}), (older, {"n": 0})]
    assert list(store.step_outputs("other")) == []


def test_only_an_unexpected_step_failure_logs_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A StepFailed or ValueError message is the whole story (one line for the user); anything else keeps
    # its traceback for `--verbose`.
    from agent_release.pipelines.executor import StepFailed

    def failing(exc: Exception):  # type: ignore[no-untyped-def]
        def run(r: StepRun) -> BaseModel:
            raise exc

        return run

    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    tracebacks = {}
    for exc in (StepFailed("data contract failed"), ValueError("bad value"), KeyError("surprise")):
        steps = [StepDef("s", (), Out, failing(exc))]
        caplog.clear()
        with caplog.at_level("DEBUG", logger="agent_release.pipelines.executor"):
            assert (
                ex.run(ex.start("p", tmp_path / "p.yaml", "", steps), steps, context=None).status == "failed"
            )
        tracebacks[type(exc).__name__] = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert tracebacks["StepFailed"] == [] and tracebacks["ValueError"] == []
    assert [type(e) for e in tracebacks["KeyError"]] == [KeyError]
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):  # closed: the state database is not held open
        store.latest()


class Held(BaseModel):
    decision: str
    held: bool


@pytest.mark.parametrize(("held", "status"), [(False, "succeeded"), (True, "held")])
def test_a_finished_run_records_its_end_and_an_output_held_for_approval_holds_it(
    tmp_path: Path, held: bool, status: str
) -> None:
    # A promotion held for a release manager's approval ends the execution `held`, not `succeeded`.
    steps = [
        StepDef("decide", (), Decision, lambda r: Decision(decision="promote")),
        StepDef("promote", ("decide",), Held, lambda r: Held(decision="promote", held=held)),
        StepDef("after", ("promote",), Out, lambda r: Out(value=1)),
    ]
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    eid = ex.start("p", tmp_path / "p.yaml", "", steps)
    before = store.execution(eid)["started_at"]
    result = ex.run(eid, steps, context=None)
    assert (result.status, result.decision) == (status, "promote")
    row = store.execution(eid)
    assert (row["status"], row["decision"], row["error"]) == (status, "promote", None)
    assert row["finished_at"] >= before
