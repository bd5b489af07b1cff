"""The training step: train, save, register (pending), bootstrap a champion, stay idempotent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import cast

import pytest
from _fake_registry import FakeRegistry
from pydantic import ValidationError

from agent_release.agents.demo_model.serving import artifact_path, load_demo_model
from agent_release.agents.demo_model.training import TrainingDataError, load_examples
from agent_release.steps.backend import ApprovalStatus, Backend, ModelPackage
from agent_release.steps.train_model import TrainConfig, train_model

DATA = Path(__file__).resolve().parents[2] / "datasets" / "support"
GROUP = "support-demo"


@pytest.fixture(scope="module")
def small_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller copy of train.jsonl (both cohorts, file order kept) so the step tests train in a second."""
    examples = load_examples(DATA / "train.jsonl")
    old = [e for e in examples if e.cohort == "2026-q2"][:150]
    new = [e for e in examples if e.cohort == "2026-q3"][:250]
    base = tmp_path_factory.mktemp("project")
    (base / "train.jsonl").write_text("".join(json.dumps(e.model_dump()) + "\n" for e in [*old, *new]))
    return base


def _config(**overrides: object) -> TrainConfig:
    return TrainConfig(**{"data": "train.jsonl", "package_group": GROUP, **overrides})  # type: ignore[arg-type]


def _run(registry: FakeRegistry, base: Path, artifacts: Path, **overrides: object):
    return train_model(_config(**overrides), cast(Backend, registry), base, artifacts)


def test_fresh_registry_bootstraps_an_approved_champion_and_a_pending_challenger(
    small_train: Path, tmp_path: Path
) -> None:
    registry = FakeRegistry()
    report = _run(registry, small_train, tmp_path)
    assert not report.skipped
    champion, challenger = report.bootstrap_champion, report.challenger
    assert champion is not None and challenger is not None
    packages = registry.list_packages(GROUP)
    assert [p.version for p in packages] == [1, 2]
    assert packages[0].approval_status == ApprovalStatus.APPROVED == champion.approval_status
    assert packages[0].approval_description.startswith("bootstrap champion:")
    assert "2026-q2" in packages[0].approval_description
    assert packages[1].approval_status == ApprovalStatus.PENDING == challenger.approval_status
    assert packages[0].metadata["cohorts"] == "2026-q2" and packages[0].metadata["n_examples"] == 150
    meta = packages[1].metadata
    assert meta["cohorts"] == "all" and meta["n_examples"] == 400 and meta["seed"] == 7
    assert meta["data_sha256"] == hashlib.sha256((small_train / "train.jsonl").read_bytes()).hexdigest()
    assert 0.9 <= packages[1].metrics["training_accuracy_intent"] <= 1.0
    (entry,) = registry.audit  # the one approval no gate decided is in the ledger
    assert entry["action"] == "approve_bootstrap" and entry["subject"] == champion.arn
    assert entry["reason"] == packages[0].approval_description
    assert entry["evidence"]["cohorts"] == ["2026-q2"] and entry["evidence"]["version"] == 1
    assert entry["evidence"]["data_sha256"] == meta["data_sha256"]
    path = artifact_path(challenger.artifact_uri)
    assert path.parent == tmp_path.resolve() and path.is_file()
    assert meta["artifact_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    response = load_demo_model(challenger.artifact_uri).complete(
        {"messages": [{"role": "user", "content": "Hello"}]}
    )
    assert response["choices"][0]["message"]["content"]


def test_rerun_reuses_packages_instead_of_registering_duplicates(small_train: Path, tmp_path: Path) -> None:
    registry = FakeRegistry()
    first = _run(registry, small_train, tmp_path)
    registry.calls.clear()
    second = _run(registry, small_train, tmp_path)
    assert len(registry.list_packages(GROUP)) == 2
    assert "register_package" not in registry.calls and "update_approval" not in registry.calls
    assert "append_audit" not in registry.calls, "nothing was approved, so nothing to record"
    assert second.bootstrap_champion is None, "a champion exists now"
    assert second.challenger is not None and first.challenger is not None
    assert second.challenger.reused and second.challenger.arn == first.challenger.arn

    # A deleted artifact is rebuilt bit for bit at the registered path.
    path = artifact_path(first.challenger.artifact_uri)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.unlink()
    third = _run(registry, small_train, tmp_path)
    assert third.challenger is not None and third.challenger.reused
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest

    # Naming every cohort is the same training set as naming none.
    same = _run(registry, small_train, tmp_path, cohorts=["2026-q3", "2026-q2"])
    assert same.challenger is not None and same.challenger.arn == first.challenger.arn


def test_a_different_seed_registers_a_new_version(small_train: Path, tmp_path: Path) -> None:
    registry = FakeRegistry()
    _run(registry, small_train, tmp_path)
    report = _run(registry, small_train, tmp_path, seed=8)
    assert report.challenger is not None and not report.challenger.reused
    assert report.challenger.version == 3 and report.bootstrap_champion is None


def test_disabled_and_no_bootstrap(small_train: Path, tmp_path: Path) -> None:
    registry = FakeRegistry()
    assert _run(registry, small_train, tmp_path, enabled=False).skipped
    assert registry.calls == []
    report = _run(registry, small_train, tmp_path, bootstrap_champion=False, cohorts=["2026-q3"])
    assert report.bootstrap_champion is None
    assert [p.metadata["cohorts"] for p in registry.list_packages(GROUP)] == ["2026-q3"]


def test_user_mistakes_are_clear_errors(small_train: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match=r"not in train\.jsonl"):
        _run(FakeRegistry(), small_train, tmp_path, cohorts=["1999-q1"])
    with pytest.raises(TrainingDataError, match="cannot read training data"):
        _run(FakeRegistry(), small_train, tmp_path, data="missing.jsonl")
    with pytest.raises(ValidationError):
        _config(learning_rate=0.1)
    assert TrainConfig.model_fields["bootstrap_champion"].description


def test_an_approval_interrupted_after_its_ledger_entry_is_completed_once_on_rerun(
    small_train: Path, tmp_path: Path
) -> None:
    class DiesWhileApproving(FakeRegistry):
        def __init__(self) -> None:
            super().__init__()
            self.dead = True

        def update_approval(self, arn: str, status: ApprovalStatus, description: str) -> ModelPackage:
            if self.dead:
                self.dead = False
                raise KeyboardInterrupt("killed between the ledger entry and the approval")
            return super().update_approval(arn, status, description)

    registry = DiesWhileApproving()
    with pytest.raises(KeyboardInterrupt):
        _run(registry, small_train, tmp_path)
    assert [e["action"] for e in registry.audit] == ["approve_bootstrap"], "the ledger was written first"
    assert all(p.approval_status == ApprovalStatus.PENDING for p in registry.list_packages(GROUP))

    report = _run(registry, small_train, tmp_path)  # the resume
    assert report.bootstrap_champion is not None and report.bootstrap_champion.reused
    assert report.bootstrap_champion.approval_status == ApprovalStatus.APPROVED
    assert [e["action"] for e in registry.audit] == ["approve_bootstrap"], "not recorded twice"
    assert registry.audit[0]["subject"] == report.bootstrap_champion.arn


def test_data_the_challenger_cannot_train_on_leaves_no_package_and_no_approval(
    small_train: Path, tmp_path: Path
) -> None:
    """The bootstrap champion (oldest cohort) trains fine; the challenger's cohort has one intent only."""
    examples = load_examples(small_train / "train.jsonl")
    one_intent = next(e.intent for e in examples if e.cohort == "2026-q3")
    rows = [e for e in examples if e.cohort == "2026-q2" or e.intent == one_intent]
    base = tmp_path / "project"
    base.mkdir()
    (base / "train.jsonl").write_text("".join(json.dumps(e.model_dump()) + "\n" for e in rows))
    registry = FakeRegistry()
    with pytest.raises(TrainingDataError, match="at least two intents"):
        _run(registry, base, tmp_path / "artifacts", cohorts=["2026-q3"])
    assert registry.list_packages(GROUP) == []
    assert set(registry.calls) == {"list_packages"}  # read only: no group, package, approval or ledger entry
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())
