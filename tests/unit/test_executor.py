"""The local executor: dependency order, persistence, failure recording and resume without redoing steps."""

from __future__ import annotations

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


def test_a_resumed_older_execution_is_the_latest(tmp_path: Path) -> None:
    # Ordered by start, `status` showed the newer execution after an older one was resumed (and `promote`
    # looked for a held execution in the wrong one).
    store = ExecutionStore(tmp_path)
    ex = LocalExecutor(store)
    older = ex.start("p", tmp_path / "pipeline.yaml", "name: p", make_steps([], set()))
    assert ex.run(older, make_steps([], {"c"}), context=None).status == "failed"
    newer = ex.start("p", tmp_path / "pipeline.yaml", "name: p", make_steps([], set()))
    assert ex.run(newer, make_steps([], {"a"}), context=None).status == "failed"
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
