"""The ``agent-release`` command line.

Exit codes: 0 success; 1 a failed check or run (one line on stderr, no traceback); 2 usage errors (click).
Heavy libraries are imported inside the commands that need them so ``agent-release --help`` starts fast.
Set ``AGENT_RELEASE_DEBUG=1`` to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from agent_release.pipelines.terminal_text import PrintableFormatter, printable_line

if TYPE_CHECKING:
    from agent_release.pipelines.local_backend import LocalBackend

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = "pipeline.yaml"


class CommandFailed(Exception):
    """A command's check or run failed; ``str()`` is the one-line reason."""


def _state_dir() -> Path:
    """The state directory; :class:`CommandFailed` naming ``AGENT_RELEASE_HOME`` where it cannot be resolved."""
    from agent_release.pipelines.state_db import STATE_DIR_ENV, resolve_state_dir

    try:
        return resolve_state_dir()
    except RuntimeError as exc:  # "~someone" for a user that does not exist: pathlib names no variable
        raise CommandFailed(f"{STATE_DIR_ENV}={os.environ.get(STATE_DIR_ENV)!r}: {exc}") from None


def _existing_state_dir() -> Path:
    """The state directory of an earlier run; :class:`CommandFailed` where there is none. Never creates it.

    For every command that has nothing to act on without state: the read-only ones, ``promote``, ``rollback``,
    ``serve`` and ``run --resume``. A wrong cwd must not look like a clean state, and neither may an existing
    directory without ``state.db`` (``AGENT_RELEASE_HOME`` naming the home or project directory): opening the
    database there would create an empty one.
    """
    from agent_release.pipelines.state_db import state_db_path

    state_dir = _state_dir()
    try:
        exists = state_dir.exists()
    except OSError as exc:  # e.g. a name too long: the path cannot even be looked up
        raise CommandFailed(
            f"state directory {state_dir} cannot be looked up: {exc.strerror} (check AGENT_RELEASE_HOME)"
        ) from None
    if exists and not state_dir.is_dir():
        raise CommandFailed(f"state directory {state_dir} is not a directory (check AGENT_RELEASE_HOME)")
    if not state_dir.is_dir():
        raise CommandFailed(
            f"no state directory at {state_dir}: nothing has run here yet "
            "(run from the project directory or set AGENT_RELEASE_HOME)"
        )
    if not state_db_path(state_dir).is_file():
        raise CommandFailed(
            f"no state database in {state_dir}: nothing has run here yet (run from the project directory, "
            "or set AGENT_RELEASE_HOME to the .agent-release directory a run created)"
        )
    return state_dir


def _fail(message: str) -> None:
    from agent_release.pipelines.executor import flatten

    # One line whatever the message quotes: a path, id or value with a newline in it would break it.
    click.echo(f"error: {flatten(message)}", err=True)
    sys.exit(1)


def handle_errors(fn: F) -> F:
    """Turn expected failures into one line on stderr and exit 1; keep tracebacks for AGENT_RELEASE_DEBUG."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt as exc:
            _fail(_interrupted(fn.__name__, getattr(exc, "execution_id", None)))
        except BrokenPipeError:
            _reader_went_away()
        except Exception as exc:
            if os.environ.get("AGENT_RELEASE_DEBUG"):
                raise
            from agent_release.pipelines.executor import one_line
            from agent_release.pipelines.state_db import (
                damaged_message,
                is_damaged_error,
                is_locked_error,
                locked_message,
                state_db_path,
            )

            if is_locked_error(exc):
                _fail(locked_message(_state_dir()))
            if is_damaged_error(exc):  # a damaged page met by a query, after the file opened fine
                _fail(damaged_message(state_db_path(_state_dir()), exc))
            if _is_missing_aws_credentials(exc):
                _fail(
                    f"no AWS credentials ({one_line(exc)}): set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or run where an IAM role provides them (`compile` needs none)"
                )
            known = (ValueError, CommandFailed, LookupError, OSError, RuntimeError)
            prefix = "" if isinstance(exc, known) else f"{type(exc).__name__}: "
            _fail(prefix + one_line(exc))

    return wrapper  # type: ignore[return-value]


def _is_missing_aws_credentials(exc: BaseException) -> bool:
    """True for botocore's "no credentials" errors (only possible once botocore has been imported)."""
    if "botocore" not in sys.modules:
        return False
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    return isinstance(exc, NoCredentialsError | PartialCredentialsError)


def _reader_went_away() -> None:
    """Exit quietly when stdout's reader closed the pipe (``agent-release audit | head -1``).

    What the reader wanted has been written; an "error: Broken pipe" line would only be noise. Stdout is
    pointed at /dev/null first, or the interpreter's final flush raises the same error again at exit.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


def _interrupted(command: str, execution_id: str | None) -> str:
    """The one line for Ctrl-C (or SIGTERM): only ``run`` has an execution to resume."""
    if execution_id:
        return f"interrupted; resume with `agent-release run --resume {execution_id}`"
    if command == "run":
        return "interrupted; resume with `agent-release run --resume <id>` (see `agent-release status`)"
    if command == "promote":
        # promote_challenger sends the traffic back to the baseline on any failure mid-shift, Ctrl-C included.
        return "interrupted; a traffic shift in progress was rolled back (see `agent-release status`)"
    if command == "rollback":
        return "interrupted; see `agent-release status` for the endpoint's weights"
    return "interrupted"


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM (timeout, CI, systemd) takes the Ctrl-C path: a run or shift rolls back and says so."""
    raise KeyboardInterrupt(f"signal {signum}")


def _install_sigterm_handler() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Libraries set their own logger levels (Great Expectations logs INFO on import); the handler's level is
    # what keeps the console quiet whatever they do.
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
        # A logged answer, URL or reason holding ESC must not drive the terminal.
        handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        for noisy in ("mlflow", "great_expectations", "strands", "botocore", "urllib3", "alembic", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    if not verbose:
        import warnings

        # Library warnings (pandas regex groups in GE, pydantic, botocore deprecations) are not the user's
        # business on the console; -v shows them.
        warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def _refuse_undecodable(value: str) -> None:
    """Refuse text with bytes that were not UTF-8 on the command line (Python keeps them as lone surrogates):
    the ledger hashes its entries as UTF-8 and the registry stores text, so they would fail mid-write."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise click.BadParameter(f"is not valid UTF-8 (a stray byte at character {exc.start + 1})") from None


def _one_line_reason(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A non-blank, single-line ``--reason``: it is recorded in the ledger, one entry per line in `audit`."""
    _refuse_undecodable(value)
    if not value.strip():
        raise click.BadParameter("needs a reason (it is recorded in the audit ledger)")
    if any(ch in value for ch in "\r\n"):
        raise click.BadParameter("must be one line (each ledger entry is one line in `agent-release audit`)")
    return value.strip()


def _one_line_or_none(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An optional one-line text (stripped): it is recorded in the registry or the ledger."""
    if value is not None:
        _refuse_undecodable(value)
    if value is not None and any(ch in value for ch in "\r\n"):
        raise click.BadParameter("must be one line")
    return None if value is None else value.strip()


def _nonblank_path(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A usage error (exit 2) for an empty or all-blank path: ``-c ''`` read the current directory, and
    ``-o ' '`` wrote a file named by a space."""
    # click hands an empty value over as Path("") == Path("."), so the two cannot be told apart here.
    if value is not None and str(value).strip() in ("", "."):
        raise click.BadParameter("needs a file path, got an empty one (or '.')")
    return value


def _float_in(low: float, high: float) -> Callable[[click.Context, click.Parameter, Any], float | None]:
    """A click callback: a finite float in [low, high], or a usage error naming the option (exit 2)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
        if value is None:
            return None
        if not (math.isfinite(value) and low <= value <= high):
            raise click.BadParameter(f"must be a finite number in [{low:g}, {high:g}], got {value!r}")
        return float(value)

    return check


def _schedule(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    """``--schedule 10,50,100`` as floats obeying ``promote.schedule``'s rules (increasing, in (0, 100], ending
    at 100); anything else is a usage error naming the option (exit 2), before any config or state is read."""
    if value is None:
        return None
    if not value.strip():
        # An empty value (`--schedule "$STEPS"` with STEPS unset) must not silently mean the configured one.
        raise click.BadParameter("needs at least one step (e.g. 10,50,100)")
    steps: list[float] = []
    for part in value.split(","):
        try:
            step = float(part)
        except ValueError:
            raise click.BadParameter(f"{part.strip()!r} is not a number (expected e.g. 10,50,100)") from None
        if not math.isfinite(step):
            raise click.BadParameter(f"{part.strip()!r} is not a finite number")
        steps.append(step)
    from agent_release.steps.promote_challenger import PromotionError, checked_schedule

    try:
        return checked_schedule(steps)
    except PromotionError as exc:
        raise click.BadParameter(f"{exc} (expected e.g. 10,50,100)") from None


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    callback=_nonblank_path,
    help="Pipeline definition.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug output to stderr.")
@click.version_option(package_name="agent-release")
def main(verbose: bool) -> None:
    """Ship new versions of LLM agents safely: validate, deploy, evaluate, decide, shift traffic, audit."""
    _setup_logging(verbose)


# -- validate / schema ------------------------------------------------------------------------------------------


@main.command()
@config_option
@handle_errors
def validate(config_path: Path) -> None:
    """Check pipeline.yaml, the files it references and the datasets' data contracts."""
    from agent_release.pipelines.config import check_referenced_files, load_config
    from agent_release.pipelines.config_checks import check_config, config_warnings
    from agent_release.steps.validate_datasets import validate_datasets

    loaded = load_config(config_path)
    check_referenced_files(loaded)
    check_config(loaded)
    for warning in config_warnings(loaded):
        click.echo(f"warning: {printable_line(warning)}")
    report = validate_datasets(loaded.config.datasets, loaded.base_dir)
    for ds in report.datasets:
        mark = "ok" if ds.success else "FAILED"
        click.echo(f"{ds.name}: {mark} ({ds.n_rows} rows, {ds.n_clusters} clusters, sha256 {ds.sha256[:12]})")
    if not report.success:
        # Only failures: a dataset that passed has its "ok" line above and is no "more" failure.
        failures = report.failure_lines()
        for line in failures:  # they quote the dataset's case ids
            click.echo(f"  {printable_line(line)}")
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        raise CommandFailed(f"data contract failed: {failures[0]}{more}")
    click.echo(f"{config_path}: valid")


@main.command()
def schema() -> None:
    """Print the JSON Schema of pipeline.yaml."""
    from agent_release.pipelines.config import PipelineConfig

    click.echo(json.dumps(PipelineConfig.model_json_schema(), indent=2))


# -- run ------------------------------------------------------------------------------------------------------


@main.command()
@config_option
@click.option("--resume", "resume_id", default=None, help="Continue an interrupted execution by id.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the execution result as JSON on stdout.")
@handle_errors
def run(config_path: Path, resume_id: str | None, quiet: bool, as_json: bool) -> None:
    """Run the pipeline locally (or resume an execution)."""
    from agent_release.pipelines.console import RunConsole
    from agent_release.pipelines.local_run import run_local

    if resume_id is not None and not resume_id.strip():
        raise click.BadParameter("needs an execution id (see `agent-release status`)", param_hint="--resume")
    given = click.get_current_context().get_parameter_source("config_path")
    if resume_id is not None and given == click.core.ParameterSource.COMMANDLINE:
        # The resumed execution runs on the config stored when it started; saying nothing let an edited
        # (or missing) file look as if it had been read.
        click.echo(
            f"warning: {printable_line(str(config_path))} is not read: a resumed execution uses the "
            "pipeline.yaml stored when it started",
            err=True,
        )
    _install_sigterm_handler()
    console = RunConsole(quiet=quiet or as_json)
    # A new run creates the state directory; a resumed one needs the state of the run it continues (creating
    # an empty one in a wrong cwd would only hide where that state is).
    state_dir = _state_dir() if resume_id is None else _existing_state_dir()
    result = run_local(config_path, state_dir=state_dir, resume_id=resume_id, console=console)
    report_path = _render_report_quietly(state_dir, result.id)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": result.id,
                    "status": result.status,
                    "decision": result.decision,
                    "promotion": _promotion_outcome(result),
                    "error": result.error,
                    "ran": result.ran,
                    "reused": result.reused,
                    "skipped": result.skipped,
                    "report": str(report_path) if report_path else None,
                }
            )
        )
    else:
        _print_run_footer(console, result, report_path)
    if result.status == "failed":
        raise CommandFailed(f"execution {result.id} failed at {result.error}")


def _render_report_quietly(state_dir: Path, execution_id: str) -> Path | None:
    """Write the HTML report of an execution; a report failure never fails the run itself."""
    try:
        from agent_release.pipelines.report import render_report
    except ImportError:
        return None
    try:
        return render_report(state_dir, execution_id)
    except Exception:
        logging.getLogger(__name__).warning(
            "execution=<%s> | report could not be written", execution_id, exc_info=True
        )
        return None


def _promotion_outcome(result: Any) -> dict[str, str] | None:
    """What the promotion step did (``action``: promoted, rolled_back, held_for_approval, rejected,
    no_change) and why, or None when it has not run. ``decision`` alone is the gate's: after a guard rolled
    the canary back it still reads "promote"."""
    from agent_release.pipelines.status import promotion_outcome

    promotion = result.outputs.get("promote_challenger")
    return promotion_outcome(getattr(promotion, "action", None), getattr(promotion, "reason", None))


def _print_run_footer(console: Any, result: Any, report_path: Path | None) -> None:
    status = {
        "succeeded": "[green]succeeded[/green]",
        "held": "[yellow]held for approval[/yellow]",
        "failed": "[red]failed[/red]",
    }.get(result.status, result.status)
    decision = f", decision [bold]{result.decision}[/bold]" if result.decision else ""
    # The run succeeds when a guard rolls the canary back (the pipeline did its job), but "decision
    # promote" alone read as if the challenger had been promoted.
    promotion = _promotion_outcome(result)
    if promotion is not None and promotion["action"] == "rolled_back":  # "rejected": the gate's, no canary
        from agent_release.pipelines.console import shown

        decision += f", [red]rolled back[/red]: {shown(promotion['reason'])}"
    console.note(f"execution {result.id} {status}{decision}")
    if report_path is not None:
        console.note(f"report: {report_path}")
    console.note(
        "MLflow UI: `agent-release status` shows the tracking URI; "
        "run `mlflow ui --backend-store-uri <uri>` to browse runs and traces"
    )


# -- status ---------------------------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a stable contract).")
@config_option
@handle_errors
def status(as_json: bool, config_path: Path) -> None:
    """Endpoints, variants and weights, champion/challenger, last decision, tracking URI, state dir."""
    from agent_release.pipelines.status import collect_status, render_status

    # Read-only: outside a project (no state directory) say so instead of creating an empty one.
    state_dir = _existing_state_dir()
    explicit = click.get_current_context().get_parameter_source("config_path") != ParameterSource.DEFAULT
    if explicit and not config_path.exists():
        # A default pipeline.yaml may be absent (AGENT_RELEASE_HOME from elsewhere); a named one is a typo.
        raise CommandFailed(f"{config_path}: no such file (-c/--config)")
    data = collect_status(
        state_dir,
        config_path if config_path.exists() else None,
        warn=lambda message: click.echo(f"warning: {message}", err=True),
    )
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        render_status(data)


# -- serve ----------------------------------------------------------------------------------------------------


@main.command()
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@handle_errors
def serve(port: int, host: str) -> None:
    """Run the local SageMaker endpoint runtime in the foreground for the deployed endpoints."""
    from agent_release.pipelines.runtime.server import serve as serve_forever

    if not host.strip():
        # An empty address binds every interface: not what leaving it out (loopback) means.
        raise click.BadParameter(
            "needs an address: 127.0.0.1 (the default) for this machine only, 0.0.0.0 for every interface",
            param_hint="--host",
        )

    bound = False

    def announce(url: str) -> None:
        nonlocal bound
        bound = True
        click.echo(f"serving SageMaker Runtime on {url} (Ctrl-C stops)", err=True)

    # Without a state directory nothing is deployed, so there is nothing to serve; creating one here would
    # leave an empty state in a wrong cwd that a later run from the project never reaches.
    state_dir = _existing_state_dir()
    try:
        serve_forever(state_dir, host=host, port=port, on_bound=announce)
    except OSError as exc:
        if bound:
            raise
        # The bind failed (port in use, unknown host, address not on this machine): name the address.
        raise CommandFailed(
            f"cannot serve on {host}:{port}: {exc.strerror or exc} "
            "(choose another --port, --port 0 for any free one, or check --host)"
        ) from None


# -- plan -----------------------------------------------------------------------------------------------------


@main.command()
@config_option
@click.option(
    "--sd",
    "assumed_sd",
    type=float,
    default=None,
    callback=_float_in(0.0, math.inf),
    help="SD of per-case differences (default: observed in the last evaluation, else 0.5).",
)
@click.option(
    "--icc",
    "assumed_icc",
    type=float,
    default=None,
    callback=_float_in(0.0, 1.0),
    help="Intra-cluster correlation (default: observed in the last evaluation, else 0.1).",
)
@handle_errors
def plan(config_path: Path, assumed_sd: float | None, assumed_icc: float | None) -> None:
    """Power analysis: the minimum detectable effect of the configured golden set."""
    from agent_release.pipelines.planning import plan_power

    for line in plan_power(config_path, _state_dir(), assumed_sd=assumed_sd, assumed_icc=assumed_icc):
        click.echo(line)


# -- release-manager actions ----------------------------------------------------------------------------------


def _actor() -> str:
    import getpass

    try:
        return f"user:{getpass.getuser()}"
    except Exception:
        return "user:unknown"


@main.command()
@click.argument("variant")
@config_option
@click.option(
    "--schedule",
    default=None,
    callback=_schedule,
    help="Comma-separated challenger percentages, e.g. 10,50,100.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@handle_errors
def promote(variant: str, config_path: Path, schedule: list[float] | None, quiet: bool) -> None:
    """Shift traffic to VARIANT progressively with live guards (continues a manual approval)."""
    from agent_release.pipelines.release_actions import promote_command

    if not variant.strip():
        raise click.BadParameter("needs a variant name (see `agent-release status`)", param_hint="VARIANT")

    # Nothing has run without a state directory, so nothing is deployed to promote: say so, create nothing.
    state_dir = _existing_state_dir()
    _install_sigterm_handler()
    report = promote_command(config_path, state_dir, variant, actor=_actor(), schedule=schedule, quiet=quiet)
    click.echo(f"{report.action}: {printable_line(report.reason)}")
    if report.action == "rolled_back":
        raise CommandFailed(f"promotion of {variant} rolled back: {report.reason}")


@main.command()
@config_option
@click.option(
    "--reason",
    default="manual rollback",
    show_default=True,
    callback=_one_line_reason,
    help="Why (recorded in the ledger).",
)
@handle_errors
def rollback(config_path: Path, reason: str) -> None:
    """Send 100% of traffic back to the champion now."""
    from agent_release.pipelines.release_actions import rollback_command

    # As promote: no state directory means nothing deployed, so nothing to roll back.
    state_dir = _existing_state_dir()
    _install_sigterm_handler()
    state = rollback_command(config_path, state_dir, actor=_actor(), reason=reason)
    weights = ", ".join(f"{v.name}={v.current_weight:g}" for v in state.variants)
    click.echo(f"rolled back {state.name}: {weights}")


@main.command()
@click.argument("action", required=False, type=click.Choice(["list", "verify"]), default="list")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Entries as JSON lines; with verify, {"intact", "entries", "problems"}.',
)
@click.option(
    "--execution",
    "execution_id",
    default=None,
    help="list: only the entries an execution wrote (its id, as `status` and `run --json` give it).",
)
@click.option("--last", type=click.IntRange(min=1), default=None, help="list: only the newest N entries.")
@handle_errors
def audit(action: str, as_json: bool, execution_id: str | None, last: int | None) -> None:
    """The decision ledger; `audit verify` detects edited, removed or reordered entries."""
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.pipelines.state_db import read_only

    if action == "verify" and (execution_id is not None or last is not None):
        # A chain is verified whole: a filtered verify would read as "these entries are intact".
        raise click.UsageError(
            "--execution and --last filter `audit list`; `audit verify` checks every entry"
        )
    if execution_id is not None and not execution_id.strip():
        raise click.BadParameter("needs an execution id", param_hint="--execution")
    state_dir = _existing_state_dir()
    # Only looks: an auditor with read access to the state directory can list and verify the ledger, and
    # nothing is created or written.
    with read_only():
        backend = LocalBackend(state_dir)
        try:
            _audit(backend, state_dir, action, as_json, execution_id=execution_id, last=last)
        finally:
            backend.close()


def _audit(
    backend: LocalBackend,
    state_dir: Path,
    action: str,
    as_json: bool,
    *,
    execution_id: str | None = None,
    last: int | None = None,
) -> None:
    from agent_release.pipelines.backend_rules import DAMAGED_EVIDENCE_KEY
    from agent_release.pipelines.state_db import audit_head_problem

    if action == "verify":
        # A head that is no file (a directory, a FIFO) is a damaged head: verify_audit would fail with the
        # raw errno message, or wait forever on a FIFO.
        head_problem = audit_head_problem(state_dir)
        problems = [f"the ledger's recorded head {head_problem}"] if head_problem else backend.verify_audit()
        if as_json:  # a script asking for JSON gets JSON whatever the verdict (the exit code still says it)
            entries = len(backend.list_audit())
            click.echo(json.dumps({"intact": not problems, "entries": entries, "problems": problems}))
        if problems:
            if len(problems) > 1 and not as_json:  # one problem is the error line alone
                for p in problems:
                    click.echo(printable_line(p), err=True)
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CommandFailed(f"audit ledger tampered: {problems[0]}{more}")
        if not as_json:
            click.echo(f"audit ledger intact ({len(backend.list_audit())} entries)")
        return
    listed = backend.list_audit()
    if execution_id is not None:
        listed = [e for e in listed if e.execution_id == execution_id]
        if not listed:
            click.echo(
                f"warning: no ledger entry was written by execution {printable_line(execution_id)}", err=True
            )
    if last is not None:
        listed = listed[-last:]
    for entry in listed:
        if as_json:
            click.echo(entry.model_dump_json())
        else:
            import time as _time

            at = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(entry.at))
            damaged = (
                " [damaged evidence: see `agent-release audit verify`]"
                if DAMAGED_EVIDENCE_KEY in entry.evidence
                else ""
            )
            # Shown escaped, kept exact: the ledger hashed the text as it was given (`--reason $'\e[2J'`).
            what = " ".join(printable_line(v) for v in (entry.actor, entry.action, entry.subject))
            click.echo(f"#{entry.seq} {at} {what}: {printable_line(entry.reason)}{damaged}")


@main.command()
@click.argument("execution_id", required=False)
@handle_errors
def report(execution_id: str | None) -> None:
    """Write the HTML report of an execution (latest by default) and print its path."""
    from agent_release.pipelines.executor import ExecutionStore
    from agent_release.pipelines.report import render_report

    if execution_id is not None and not execution_id.strip():
        # An empty id (`report "$ID"` with ID unset) must not silently mean the latest execution.
        raise click.BadParameter("needs an execution id, or none for the latest", param_hint="EXECUTION_ID")
    state_dir = _existing_state_dir()
    store = ExecutionStore(state_dir)
    try:
        row = store.execution(execution_id) if execution_id else store.latest()
        recent = [str(r["id"]) for r in store.recent(limit=3)] if row is None else []
    finally:
        store.close()
    if row is None and execution_id and recent:
        raise CommandFailed(f"no execution {execution_id}; the most recent: {', '.join(recent)}")
    if row is None:
        raise CommandFailed(
            f"no execution {execution_id}; nothing has run here yet"
            if execution_id
            else "no executions yet; run one first"
        )
    click.echo(str(render_report(state_dir, row["id"])))


# -- model packages -------------------------------------------------------------------------------------------


@main.group()
def package() -> None:
    """The local model registry: register a model you serve yourself, list a group's packages."""


def _package_group(group: str | None, config_path: Path) -> str:
    """``--group``, else ``deploy.package_group`` of the config (whose other checks do not matter here)."""
    if group is not None:
        if not group.strip():
            raise click.BadParameter("needs a model package group name", param_hint="--group")
        return group
    if not config_path.exists():
        raise CommandFailed(
            f"{config_path}: no such file: name the model package group with --group, or pass -c with the "
            "pipeline.yaml whose deploy.package_group it is"
        )
    from agent_release.pipelines.config import load_config

    return load_config(config_path).config.deploy.package_group


@package.command(name="register")
@config_option
@click.option("--group", default=None, help="Model package group (default: deploy.package_group of -c).")
@click.option(
    "--kind",
    required=True,
    type=click.Choice(["openai_compatible", "python"]),
    help="openai_compatible: an OpenAI-compatible server (llama.cpp, Ollama, vLLM); python: a class of yours.",
)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A model option, repeatable: base_url, model, api_key_env, timeout_s (openai_compatible); "
    "class_path, init (python). JSON values are read as JSON.",
)
@click.option(
    "--description", default="", callback=_one_line_or_none, help="What this package is (one line)."
)
@click.option(
    "--approve",
    "approve_reason",
    default=None,
    callback=_one_line_or_none,
    metavar="REASON",
    help="Approve it as the group's first champion (refused once the group has an Approved package).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the registered package as JSON.")
@handle_errors
def package_register(
    config_path: Path,
    group: str | None,
    kind: str,
    options: tuple[str, ...],
    description: str,
    approve_reason: str | None,
    as_json: bool,
) -> None:
    """Register a model you serve yourself as the next version of a package group (PendingManualApproval).

    `deploy.challenger: latest_pending` then deploys it as the challenger (set `train.enabled: false`, or
    the training step registers a newer one).
    """
    from agent_release.pipelines.backend_rules import check_package_group_name
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.pipelines.package_commands import (
        check_model_options,
        package_rows,
        parse_options,
        register_package_command,
    )

    if approve_reason is not None and not approve_reason:
        raise click.BadParameter(
            "needs a reason (it is recorded in the audit ledger)", param_hint="--approve"
        )
    # Every check before the state directory is opened: a refused package creates nothing.
    name = _package_group(group, config_path)
    check_package_group_name(name)
    model = check_model_options(kind, parse_options(options))
    backend = LocalBackend(_state_dir())
    try:
        registered = register_package_command(
            backend,
            name,
            model,
            actor=_actor(),
            description=description,
            approve_reason=approve_reason,
        )
    finally:
        backend.close()
    if as_json:
        click.echo(json.dumps(package_rows([registered])[0], indent=2))
        return
    click.echo(
        f"registered {registered.group} v{registered.version} ({kind}): {registered.approval_status.value}"
    )
    click.echo(f"  arn: {registered.arn}")


@package.command(name="list")
@config_option
@click.option("--group", default=None, help="Model package group (default: deploy.package_group of -c).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def package_list(config_path: Path, group: str | None, as_json: bool) -> None:
    """A package group's versions, newest first: approval status, kind and what each points at."""
    import time

    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.pipelines.package_commands import list_packages_command
    from agent_release.pipelines.state_db import read_only

    name = _package_group(group, config_path)
    state_dir = _existing_state_dir()
    with read_only():  # only looks, like `status` and `audit`
        backend = LocalBackend(state_dir)
        try:
            rows = list_packages_command(backend, name)
        finally:
            backend.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"]))
        model = f" model={printable_line(row['model'])}" if row["model"] else ""
        about = f"  ({printable_line(row['description'])})" if row["description"] else ""
        click.echo(
            f"v{row['version']:<4} {row['approval_status']:<22} {row['kind']:<18} {created}  "
            f"{printable_line(row['target'] or '-')}{model}{about}"
        )


# -- SageMaker target -----------------------------------------------------------------------------------------


@main.command(name="compile")
@config_option
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    callback=_nonblank_path,
    help="Where to write the pipeline definition JSON (missing parent directories are created).",
)
@handle_errors
def compile_(config_path: Path, output: Path) -> None:
    """Compile the pipeline to a SageMaker Pipelines definition (no AWS account needed)."""
    from agent_release.pipelines.sagemaker_target import compile_definition

    path = compile_definition(config_path, output)
    click.echo(str(path))


@main.command()
@config_option
@handle_errors
def upsert(config_path: Path) -> None:
    """Create or update the SageMaker pipeline (and its schedule/trigger)."""
    from agent_release.pipelines.sagemaker_target import upsert_pipeline

    click.echo(upsert_pipeline(config_path))


@main.command()
@config_option
@click.option(
    "-p", "--parameter", "parameters", multiple=True, help="NAME=VALUE pipeline parameter override."
)
@handle_errors
def start(config_path: Path, parameters: tuple[str, ...]) -> None:
    """Start an execution of the SageMaker pipeline."""
    from agent_release.pipelines.sagemaker_target import start_pipeline

    overrides: dict[str, str] = {}
    for p in parameters:
        name, sep, value = p.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, got {p!r}", param_hint="--parameter")
        if name in overrides:  # the later value would silently replace the earlier one
            raise click.BadParameter(
                f"{name} given twice ({name}={overrides[name]}, {name}={value})", param_hint="--parameter"
            )
        overrides[name] = value
    click.echo(start_pipeline(config_path, overrides, warn=lambda m: click.echo(f"warning: {m}", err=True)))


@main.command()
@config_option
@handle_errors
def executions(config_path: Path) -> None:
    """List executions of the SageMaker pipeline."""
    from agent_release.pipelines.sagemaker_target import list_executions

    for line in list_executions(config_path):
        click.echo(line)


@main.command(name="iam-policy")
@config_option
@handle_errors
def iam_policy(config_path: Path) -> None:
    """Print the least-privilege IAM policy of the pipeline's execution role (JSON)."""
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.iam_policy import execution_role_policy
    from agent_release.pipelines.sagemaker_target import check_region, require_role

    loaded = load_config(config_path)
    config = loaded.config
    require_role(loaded, config_path)  # the same one-line refusal, naming the file, as compile/upsert/start
    check_region(config.sagemaker.region)  # ARNs in a region that does not exist would grant nothing
    click.echo(json.dumps(execution_role_policy(config), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
