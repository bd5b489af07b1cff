"""Failures around a release action that used to be a bare exception or a half-written file.

``promote`` with MLflow tracking unreachable names the store and shifts nothing; ``compile -o`` that cannot
write leaves the previous definition whole and names the path; an interrupted shift is recorded in the ledger
as an interruption, not as a ``KeyboardInterrupt`` crash.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from _shared.cli import copy_project, one_error_line
from _shared.pipeline_yaml import edit
from click.testing import CliRunner

from agent_release.pipelines import atomic_write, cli
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import ApprovalStatus, ModelSpec
from agent_release.steps.deploy_variants import DeployConfig, deploy_variants
from agent_release.steps.promote_challenger import _failure_text

ROOT = Path(__file__).resolve().parents[2]
GROUP = "support-model"
ENDPOINT = "support-agent"
# Never invoked here: the promotion fails before any call reaches the endpoint.
MODEL = ModelSpec(kind="python", options={"class_path": "nowhere:Unused"})


def invoke(args: list[str], home: Path, cwd: Path) -> Any:
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=cwd):
        return runner.invoke(
            cli.main,
            [*args],
            env={"AGENT_RELEASE_HOME": str(home), "AGENT_RELEASE_DEBUG": "", "MLFLOW_TRACKING_URI": ""},
        )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def test_promote_with_tracking_unreachable_names_mlflow_and_shifts_nothing(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "state"
    backend = LocalBackend(home)
    backend.ensure_package_group(GROUP)
    first = backend.register_package(GROUP, MODEL)
    backend.update_approval(first.arn, ApprovalStatus.APPROVED, "initial champion")
    backend.register_package(GROUP, MODEL)
    deploy_variants(DeployConfig(endpoint_name=ENDPOINT, package_group=GROUP), backend)
    before = backend.describe_endpoint(ENDPOINT)
    ledger_before = backend.list_audit()
    uri = f"http://127.0.0.1:{closed_port()}"
    edit(project, "  experiment: support-agent", f"  experiment: support-agent\n  uri: {uri}")

    result = invoke(["promote", "challenger", "-c", str(project / "pipeline.yaml")], home, tmp_path)

    # It used to print the probe's bare "no answer from .../health": no word of MLflow or of the endpoint.
    one_error_line(result, f"MLflow tracking at {uri} is unavailable", "/health", "no traffic was shifted")
    after = LocalBackend(home)
    assert after.describe_endpoint(ENDPOINT) == before
    assert after.list_audit() == ledger_before


def test_compile_to_an_unwritable_path_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = blocker / "definition.json"

    result = invoke(
        ["compile", "-c", str(ROOT / "pipeline.yaml"), "-o", str(target)], tmp_path / "h", tmp_path
    )

    # It used to say "File exists" (mkdir's view of a/file/), not what is wrong.
    one_error_line(result, f"cannot write the pipeline definition to {target}: {blocker} is not a directory")


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "2026" / "report.html"
    atomic_write.write_text_atomically(target, "<html></html>")
    assert target.read_text() == "<html></html>"
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_a_parent_that_is_a_file_is_named_as_a_not_a_directory_error(tmp_path: Path) -> None:
    # The docstring's contract: NotADirectoryError naming the parent (errno ENOTDIR, as the OS would
    # raise it), found before anything is created.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(NotADirectoryError) as info:
        atomic_write.write_text_atomically(blocker / "deeper" / "definition.json", "{}")
    assert (info.value.errno, info.value.strerror, info.value.filename) == (
        errno.ENOTDIR,
        f"{blocker} is not a directory",
        str(blocker),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_rewritten_file_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path: Path) -> None:
    kept = tmp_path / "report.html"
    kept.write_text("old")
    kept.chmod(0o640)
    atomic_write.write_text_atomically(kept, "new")
    # mkstemp's 0600 used to replace the file's mode: a shared report became readable by its owner only.
    assert (kept.read_text(), kept.stat().st_mode & 0o777) == ("new", 0o640)

    previous = os.umask(0o022)
    try:
        fresh = tmp_path / "definition.json"
        atomic_write.write_text_atomically(fresh, "{}")
    finally:
        os.umask(previous)
    assert fresh.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "definition.json"
    target.write_text('{"previous": true}\n')

    class DiskFull:
        def __init__(self, fd: int, *args: Any, **kwargs: Any) -> None:
            self.file = open(fd, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__

        def __enter__(self) -> DiskFull:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, text: str) -> int:
            self.file.write(text[: len(text) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", DiskFull)  # atomic_write opens its temporary file through it
    with pytest.raises(OSError, match="No space left"):
        atomic_write.write_text_atomically(target, '{"new": "definition"}\n' * 100)

    assert target.read_text() == '{"previous": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["definition.json"]  # no temporary file left


def test_a_symlink_is_written_through_and_a_fifo_written_to_not_replaced(tmp_path: Path) -> None:
    # `compile -o link.json` replaced the link with a regular file (the file it named kept the old text);
    # `-o fifo` replaced the FIFO, and as root `-o /dev/full` replaced the device node (not tried here: a
    # regression would do it again).
    import threading

    real = tmp_path / "real" / "definition.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write.write_text_atomically(link, "new")
    assert link.is_symlink() and real.read_text() == "new"

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    atomic_write.write_text_atomically(fifo, "through the pipe")
    reader.join(10)
    assert got == ["through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.json", "link.json", "real"]


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (KeyboardInterrupt(), "interrupted (Ctrl-C)"),
        (KeyboardInterrupt("signal 15"), "interrupted (signal 15)"),
        (RuntimeError("endpoint gone\ntraceback..."), "RuntimeError: endpoint gone"),
    ],
)
def test_what_stopped_a_shift_is_named_for_the_ledger(exc: BaseException, text: str) -> None:
    # Ctrl-C used to be recorded as "KeyboardInterrupt: KeyboardInterrupt".
    assert _failure_text(exc) == text


def test_report_of_an_unknown_execution_names_the_recent_ones(tmp_path: Path) -> None:
    from agent_release.pipelines.executor import ExecutionStore

    home = tmp_path / "state"
    store = ExecutionStore(home)
    try:
        ids = [store.create("p", tmp_path / "pipeline.yaml", "name: p\n", []) for _ in range(4)]
    finally:
        store.close()

    line = one_error_line(invoke(["report", "nope"], home, tmp_path), "no execution nope; the most recent: ")
    # It used to say only "no execution nope", with no way from there to a real id.
    assert line.endswith(", ".join(reversed(ids[1:])))


def test_start_without_aws_credentials_says_where_they_come_from(tmp_path: Path) -> None:
    no_credentials: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
        "AWS_WEB_IDENTITY_TOKEN_FILE": None,
        "AGENT_RELEASE_DEBUG": "",
    }
    result = CliRunner().invoke(cli.main, ["start", "-c", str(ROOT / "pipeline.yaml")], env=no_credentials)
    # It used to be the bare "NoCredentialsError: Unable to locate credentials".
    one_error_line(result, "no AWS credentials (Unable to locate credentials): set AWS_PROFILE")


def test_a_reader_that_closes_the_pipe_early_is_not_an_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    from agent_release.pipelines.local_backend import LocalBackend

    home = tmp_path / "state"
    backend = LocalBackend(home)
    for i in range(1500):  # far more than a pipe's 64 KB buffer once listed
        backend.append_audit("test", "note", f"entry-{i}", "x" * 200, {"i": i})
    backend.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_release.pipelines.cli", "audit"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "AGENT_RELEASE_HOME": str(home), "AGENT_RELEASE_DEBUG": ""},
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.startswith(b"#1 ")
    # It used to end with "error: [Errno 32] Broken pipe" and exit 1.
    assert (proc.returncode, stderr) == (0, "")
