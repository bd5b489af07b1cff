"""Checks of pipeline.yaml that one section's pydantic model cannot make on its own.

They need another section (a decision metric must be produced by a configured scorer, and point the way
the gate reads it; prices keyed by a deployed variant), an import (user scorers, the toolset), a referenced
file's content (training examples and cohorts, the system prompt file, the live-traffic inputs, the number
of cases the gate can see) or MLflow (which URI schemes it can track to). ``validate`` and a new ``run``
both call :func:`check_config` after :func:`~agent_release.pipelines.config.check_referenced_files`, so a
mistake fails before anything is trained, registered or deployed, with one line naming the key and its
line. ``compile`` and ``upsert`` call it with ``modules_may_be_missing=True``: a user scorer or toolset
module that cannot be imported on this machine may exist only in the step image, so its checks are skipped
(with a warning) instead of failing. ``promote`` and ``plan`` do not call it.

:func:`config_warnings` lists what is valid but will not work as intended (a canary step whose replayed
traffic is too thin for the guards to judge, a project set up for the SageMaker target without the
``sagemaker.role_arn`` its commands require); ``validate`` prints them and still passes.

What still needs run-time state and is left to the steps: whether an explicit ``deploy.champion`` /
``deploy.challenger`` ARN or version exists in the registry, and whether an ``approved`` champion exists.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from agent_release.pipelines.backend_rules import is_sagemaker_name
from agent_release.pipelines.config import ConfigError, LoadedConfig, key_lines, line_of_key
from agent_release.steps.decide_promotion import COUNTED_FIELDS
from agent_release.steps.evaluate_config import ScorerSpec
from agent_release.steps.promote_config import ThinBake, thin_bakes
from agent_release.steps.scorers import (
    LOWER_IS_BETTER_SCORERS,
    ScorerConfigError,
    build_scorer,
    effective_specs,
    registered_scorers,
)
from agent_release.steps.validate_datasets import DatasetError, case_cluster, case_ref, numbered_objects

if TYPE_CHECKING:
    from agent_release.agents.demo_model.training import TrainingExample

logger = logging.getLogger(__name__)

# Metrics decide_promotion reads from the row itself rather than from ``CaseResult.scores``
# (``_row_value``): ``error``, ``latency_s`` and the counted fields. Any other metric must be a scorer name.
ROW_FIELD_METRICS: tuple[str, ...] = ("error", "latency_s", *COUNTED_FIELDS)

_T = TypeVar("_T")


class _Reporter:
    """Builds the one-line error ``<file>:<line>: <dotted.key>: <message>``."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.source = str(loaded.path)
        self.base_dir = loaded.base_dir
        self.lines = key_lines(loaded.text)

    def error(self, key: tuple[str | int, ...], message: str) -> ConfigError:
        return ConfigError(self.line(key, import_path_hint(message, self.base_dir)))

    def line(self, key: tuple[str | int, ...], message: str) -> str:
        line = line_of_key(self.lines, key)
        where = f"{self.source}:{line}" if line else self.source
        return f"{where}: {'.'.join(str(p) for p in key)}: {message}"


def check_config(loaded: LoadedConfig, *, modules_may_be_missing: bool = False) -> None:
    """Raise :class:`ConfigError` (one line) for the first cross-section mistake in ``loaded``.

    ``modules_may_be_missing``: a user scorer or toolset given by an import path whose module is not
    importable here is skipped with a warning (the SageMaker target: it may be in the step image only),
    and so are the metric checks, which need every scorer's name.
    """
    report = _Reporter(loaded)
    skip = _absent_modules(loaded) if modules_may_be_missing else set()
    for name in sorted(skip):
        logger.warning("module=<%s> | not importable here; it must be installed in the step image", name)
    metrics = check_scorers(loaded, report, skip=skip)
    if not skip:
        check_metrics(loaded, report, metrics)
    check_gate_reachable(loaded, report)
    check_deploy(loaded, report)
    check_prices(loaded, report)
    check_train(loaded, report)
    if _module_of(loaded.config.agent.toolset) not in skip:
        check_tools(loaded, report)
    check_system_prompt(loaded, report)
    check_live_traffic(loaded, report)
    check_tracking(loaded, report)


def config_warnings(loaded: LoadedConfig) -> list[str]:
    """One line per setting that is valid but will not do what it is for (``validate`` prints them)."""
    report = _Reporter(loaded)
    return [
        *check_canary_traffic(loaded, report),
        *check_sagemaker_role(loaded, report),
        *check_bootstrap_cohort(loaded, report),
        *check_expected_tools(loaded, report),
    ]


def check_expected_tools(loaded: LoadedConfig, report: _Reporter) -> list[str]:
    """A warning per data file (golden set, training data) expecting a tool or argument the agent's tools do
    not have (see :mod:`agent_release.pipelines.expected_tools`)."""
    from agent_release.pipelines.expected_tools import expected_tool_problems

    return [report.line(key, message) for key, message in expected_tool_problems(loaded)]


def check_bootstrap_cohort(loaded: LoadedConfig, report: _Reporter) -> list[str]:
    """A warning when the bootstrap champion could not be trained, or would be the challenger again: on a
    registry with no Approved package the step trains one on the oldest cohort alone, and a run on such a
    registry would fail there, or compare a model with itself when the challenger trains on that cohort
    only. Only a warning, because with a champion approved already that cohort is never trained alone."""
    from agent_release.agents.demo_model.training import TrainingDataError, check_trainable

    train = loaded.config.train
    if train is None or not train.enabled or not train.bootstrap_champion:
        return []
    try:
        examples = _training_examples(loaded.resolve(train.data))
    except TrainingDataError:
        return []  # check_train reports it
    if not examples:
        return []
    oldest = min(e.cohort for e in examples)
    challenger_cohorts = set(train.cohorts or {e.cohort for e in examples})
    if challenger_cohorts == {oldest}:
        return [
            report.line(
                ("train", "bootstrap_champion"),
                f"with no Approved package in {train.package_group} yet, a run trains the first champion on "
                f"the oldest cohort ({oldest}) and the challenger on the same examples: the same model twice, "
                "so the first evaluation compares it with itself (add a newer cohort, or set "
                "train.bootstrap_champion: false to judge a first release by decide.first_release_min_primary)",
            )
        ]
    try:
        check_trainable([e for e in examples if e.cohort == oldest])
    except TrainingDataError as exc:
        return [
            report.line(
                ("train", "bootstrap_champion"),
                f"with no Approved package in {train.package_group} yet, a run first trains a champion on "
                f"the oldest cohort ({oldest}) alone, and cannot: {exc}; such a run fails before registering "
                "anything (approve a champion first, or set train.bootstrap_champion: false)",
            )
        ]
    return []


def check_sagemaker_role(loaded: LoadedConfig, report: _Reporter) -> list[str]:
    """A warning when the project is set up for the SageMaker target (a ``sagemaker:`` section or a
    ``schedule``) but names no execution role: the target commands refuse it, local runs do not need it."""
    config = loaded.config
    for_sagemaker = (
        "sagemaker" in config.model_fields_set
        or config.schedule.cron is not None
        or config.schedule.on_new_package
    )
    if config.sagemaker.role_arn is not None or not for_sagemaker:
        return []
    return [
        report.line(
            ("sagemaker", "role_arn"),
            "is not set: compile, upsert, start, executions and iam-policy of the SageMaker target refuse this "
            "project until it names the pipeline's execution role (local runs do not need one)",
        )
    ]


_MISSING_MODULE = re.compile(r"No module named '(?P<name>[A-Za-z_][A-Za-z0-9_]*)'")


def import_path_hint(message: str, base_dir: Path) -> str:
    """``message`` with the fix appended when it says a top-level module is missing that sits in ``base_dir``.

    A user's scorer or toolset module beside pipeline.yaml is not importable unless its directory is on
    ``PYTHONPATH`` (the directory is deliberately not searched: on the SageMaker target the module must be in
    the step image), and Python's "No module named 'x'" does not say so.
    """
    match = _MISSING_MODULE.search(message)
    if match is None:
        return message
    name = match.group("name")
    if not ((base_dir / name).is_dir() or (base_dir / f"{name}.py").is_file()):
        return message
    return (
        f"{message}; '{name}' is in {base_dir}, which Python does not search: run with PYTHONPATH={base_dir}"
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _guard(key: tuple[str | int, ...], report: _Reporter, fn: Callable[[], _T], what: str) -> _T:
    try:
        return fn()
    except ScorerConfigError as exc:
        raise report.error(key, str(exc)) from None
    except Exception as exc:  # user code (a scorer or toolset import) may raise anything
        raise report.error(key, f"{what}: {_one_line(exc)}") from None


def _module_of(import_path: str) -> str | None:
    """The module of a ``pkg.module:attr`` import path (None for a built-in name)."""
    module, sep, _ = import_path.partition(":")
    return module if sep and module else None


def _absent_modules(loaded: LoadedConfig) -> set[str]:
    """Modules of user scorers and the toolset that cannot be found on this machine."""
    import importlib.util

    config = loaded.config
    paths = [spec.name for spec in effective_specs(config.evaluate)] + [config.agent.toolset]
    absent = set()
    for module in filter(None, map(_module_of, paths)):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing, or the name is malformed
            found = False
        if not found:
            absent.add(module)
    return absent


def check_scorers(loaded: LoadedConfig, report: _Reporter, skip: set[str] | None = None) -> dict[str, str]:
    """Build every effective scorer as evaluate_variants will; return the metric names they produce, each
    with the name of the scorer that produces it (a built-in's name, or an import path). Scorers from the
    modules in ``skip`` are not built."""
    evaluate = loaded.config.evaluate
    names: dict[str, int] = {}
    producers: dict[str, str] = {}
    for index, spec in enumerate(effective_specs(evaluate)):
        if skip and _module_of(spec.name) in skip:
            continue
        key: tuple[str | int, ...] = (
            ("evaluate", "scorers", index, "name") if index < len(evaluate.scorers) else ("evaluate", "judge")
        )

        def build(spec: ScorerSpec = spec) -> str:
            return build_scorer(spec).name

        name = _guard(key, report, build, f"scorer '{spec.name}' cannot be built")
        if name in names:
            raise report.error(
                key, f"scorer name '{name}' is produced twice (also by evaluate.scorers.{names[name]})"
            )
        if name in ROW_FIELD_METRICS and spec.name not in registered_scorers():
            # The gate reads these metrics from each row's own fields, never from its scores: a user scorer of
            # that name would show in the aggregates and the report while the gate judged something else.
            raise report.error(
                key,
                f"scorer name '{name}' is a per-row field the gate reads from the row, not from the scores "
                f"({', '.join(ROW_FIELD_METRICS)}); give the user scorer another name",
            )
        names[name] = index
        producers[name] = spec.name
    return producers


def _direction(metric: str, producers: Mapping[str, str]) -> str | None:
    """Which way is better for ``metric``, where the project knows (row fields, built-in scorers)."""
    if metric in ROW_FIELD_METRICS:
        return "lower_is_better"  # errors, seconds, money, tokens, retries
    producer = producers.get(metric)
    if producer is None or producer not in registered_scorers():
        return None  # a user scorer: its direction is the user's to say
    return "lower_is_better" if producer in LOWER_IS_BETTER_SCORERS else "higher_is_better"


def check_metrics(loaded: LoadedConfig, report: _Reporter, producers: Mapping[str, str]) -> None:
    """The gate's primary metric and guardrail metrics must be scorer names or per-row fields, and point the
    way the gate reads them: the primary metric is higher-is-better (the gate promotes a challenger whose
    primary metric is higher), and a guardrail on a known metric names the direction that metric has."""
    decide = loaded.config.decide
    valid = set(producers) | set(ROW_FIELD_METRICS)

    def unknown(metric: str) -> str:
        return (
            f"'{metric}' is not produced by any configured scorer nor a per-row field "
            f"(valid: {', '.join(sorted(valid))})"
        )

    if decide.primary_metric not in valid:
        raise report.error(("decide", "primary_metric"), unknown(decide.primary_metric))
    if _direction(decide.primary_metric, producers) == "lower_is_better":
        raise report.error(
            ("decide", "primary_metric"),
            f"'{decide.primary_metric}' is lower-is-better, but the gate promotes a challenger whose primary "
            "metric is higher; gate on a quality score and keep it as a guardrail (direction: "
            "lower_is_better)",
        )
    for index, guard in enumerate(decide.guardrails):
        if guard.metric not in valid:
            raise report.error(("decide", "guardrails", index, "metric"), unknown(guard.metric))
        known = _direction(guard.metric, producers)
        if known is not None and guard.direction != known:
            raise report.error(
                ("decide", "guardrails", index, "direction"),
                f"'{guard.metric}' is {known.replace('_', '-')}, so {guard.direction} would guard the wrong "
                "way",
            )


def check_gate_reachable(loaded: LoadedConfig, report: _Reporter) -> None:
    """``decide.min_completed_cases`` within the evaluation dataset's cases, and at least two clusters
    among them (the gate's clustered test has no standard error with one): otherwise every decision is
    inconclusive, found only after training, deployment and the whole evaluation."""
    config = loaded.config
    spec = config.datasets.get(config.evaluate.dataset)
    if spec is None:
        return
    try:
        rows = numbered_objects(loaded.resolve(spec.path))
    except DatasetError:
        return  # the dataset's own check (its data contract) names what is wrong with it
    # Cases are counted as the evaluation counts them, by id; a row without one is the data contract's to
    # refuse, so it is counted as a case of its own here (never a reason to fail this check).
    cases = len({case_ref(row, number) for number, row in rows})
    if cases == 0:
        # Said first: "min_completed_cases 1 is more than the 0 cases" asks for a value below the smallest.
        raise report.error(
            ("datasets", config.evaluate.dataset, "path"),
            f"dataset {config.evaluate.dataset} ({spec.path}) has no rows, and it is the one evaluated",
        )
    wanted = config.decide.min_completed_cases
    if wanted > cases:
        raise report.error(
            ("decide", "min_completed_cases"),
            f"{wanted} is more than the {cases} cases of dataset {config.evaluate.dataset}, so every decision "
            "would be inconclusive",
        )
    clusters = {case_cluster(row) for _, row in rows}
    if len(clusters) == 1:
        raise report.error(
            ("evaluate", "dataset"),
            f"all {cases} cases of dataset {config.evaluate.dataset} are in one cluster ({next(iter(clusters))!r}), "
            "and the gate's clustered comparison needs at least 2, so every decision would be inconclusive; "
            "give the cases the cluster of the situation they test, or leave `cluster` out to make each case "
            "its own",
        )


def check_prices(loaded: LoadedConfig, report: _Reporter) -> None:
    """Price tables are keyed by a deployed variant's name or ``default``: any other key (a model name) is
    never looked up, and its variants would cost 0.0 on every case; so would a variant a table without
    ``default`` leaves out."""
    deploy = loaded.config.deploy
    known = {"default", deploy.champion_variant_name, deploy.challenger_variant_name}
    tables: list[tuple[tuple[str | int, ...], Mapping[str, object]]] = [
        (("evaluate", "prices"), loaded.config.evaluate.prices)
    ]
    for index, spec in enumerate(loaded.config.evaluate.scorers):
        prices = spec.args.get("prices") if spec.name == "cost" else None
        if isinstance(prices, Mapping):  # its shape is the cost scorer's to check
            tables.append((("evaluate", "scorers", index, "args", "prices"), prices))
    for key, table in tables:
        for name in table:
            if name not in known:
                raise report.error(
                    (*key, str(name)),
                    f"no variant is named '{name}'; prices are keyed by variant name or 'default' (known: "
                    f"{', '.join(sorted(known))})",
                )
        # A table naming one variant and no 'default' prices the other at 0.0 on every case, and the cost
        # guardrail would then favour it.
        unpriced = [
            v for v in (deploy.champion_variant_name, deploy.challenger_variant_name) if v not in table
        ]
        if table and "default" not in table and unpriced:
            raise report.error(
                key,
                f"no price for variant '{unpriced[0]}' and no 'default': its cases would cost 0.0 against "
                "the other's; price every variant or add a 'default'",
            )


def _package_ref_ok(ref: str | int, keyword: str) -> bool:
    if isinstance(ref, int):
        return ref >= 1
    return ref == keyword or ref.startswith("arn:") or (ref.isdigit() and int(ref) >= 1)


def check_deploy(loaded: LoadedConfig, report: _Reporter) -> None:
    """Names both backends accept (endpoint, package group, variants), distinct variant names, a positive
    weight sum, faults on known variants, well-formed package refs."""
    deploy = loaded.config.deploy
    # What CreateEndpoint(Config) and CreateModelPackageGroup accept (backend_rules / LocalBackend apply it at
    # run time, after training has registered a package): checked before anything is trained or registered.
    # A variant name also ends up in MLflow filter strings (register_agents), where a quote would break them.
    for field in ("endpoint_name", "package_group", "champion_variant_name", "challenger_variant_name"):
        value = getattr(deploy, field)
        if not is_sagemaker_name(value):
            raise report.error(
                ("deploy", field),
                f"{value!r}: use letters, digits and hyphens, starting and ending with a letter or digit (max 63)",
            )
    if deploy.champion_variant_name == deploy.challenger_variant_name:
        raise report.error(
            ("deploy", "challenger_variant_name"),
            f"must differ from deploy.champion_variant_name ('{deploy.champion_variant_name}')",
        )
    if deploy.challenger is not None and deploy.champion_weight + deploy.challenger_weight <= 0:
        raise report.error(("deploy", "challenger_weight"), "champion_weight + challenger_weight must be > 0")
    variants = {deploy.champion_variant_name, deploy.challenger_variant_name}
    for name in deploy.faults:
        if name not in variants:
            raise report.error(
                ("deploy", "faults", name), f"unknown variant (known: {', '.join(sorted(variants))})"
            )
    if not _package_ref_ok(deploy.champion, "approved"):
        raise report.error(
            ("deploy", "champion"),
            f"{deploy.champion!r} is neither 'approved', a package ARN nor a version number >= 1",
        )
    if deploy.challenger is not None and not _package_ref_ok(deploy.challenger, "latest_pending"):
        raise report.error(
            ("deploy", "challenger"),
            f"{deploy.challenger!r} is neither 'latest_pending', a package ARN, a version number >= 1 nor null",
        )


def _training_examples(path: Path) -> tuple[TrainingExample, ...]:
    """The examples of training file ``path``, read once per version of the file: ``validate`` checks them
    for errors (:func:`check_train`) and again for warnings (:func:`check_bootstrap_cohort`), and parsing
    2,400 examples takes about 40 ms."""
    try:
        stat = path.stat()
    except OSError:
        stat = None  # load_examples reports it
    return _examples_of(path, (stat.st_mtime_ns, stat.st_size) if stat else None)


@functools.lru_cache(maxsize=4)
def _examples_of(path: Path, version: tuple[int, int] | None) -> tuple[TrainingExample, ...]:
    from agent_release.agents.demo_model.training import load_examples

    del version  # part of the cache key only: an edited file is read again
    return tuple(load_examples(path))


def check_train(loaded: LoadedConfig, report: _Reporter) -> None:
    """The cohorts present in the training data (the seed's range is the config model's)."""
    train = loaded.config.train
    if train is None:
        return
    if not train.enabled:
        return
    from agent_release.agents.demo_model.training import TrainingDataError, check_trainable, select_examples

    data = loaded.resolve(train.data)
    try:
        examples = list(_training_examples(data))
    except TrainingDataError as exc:  # one line naming the file (and the line) already
        raise report.error(("train", "data"), str(exc)) from None
    if not examples:
        raise report.error(("train", "data"), f"{train.data} holds no training examples")
    available = sorted({e.cohort for e in examples})
    unknown = sorted(set(train.cohorts or ()) - set(available))
    if unknown:
        raise report.error(
            ("train", "cohorts"),
            f"{', '.join(unknown)} not in {train.data} (it has {', '.join(available) or 'no cohorts'})",
        )
    # What the step trains the challenger on; data it would refuse fails here rather than mid-run.
    try:
        check_trainable(select_examples(examples, train.cohorts, None))
    except TrainingDataError as exc:
        key = ("train", "cohorts") if train.cohorts else ("train", "data")
        chosen = f"cohorts {', '.join(train.cohorts)} of " if train.cohorts else ""
        raise report.error(key, f"{chosen}{train.data}: {exc}") from None


def check_tools(loaded: LoadedConfig, report: _Reporter) -> None:
    """The toolset loads and every name in ``agent.tools`` is one of its tools."""
    from agent_release.agents.builder import load_toolset

    agent = loaded.config.agent
    data_dir = loaded.resolve(agent.tool_data_dir)
    key: tuple[str, ...] = ("agent", "tools") if agent.tools is not None else ("agent", "toolset")
    try:
        load_toolset(agent.toolset, data_dir, agent.tools)
    except ValueError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise report.error(("agent", "toolset") if message.startswith("toolset") else key, message) from None
    except Exception as exc:  # a user toolset factory may raise anything
        raise report.error(("agent", "toolset"), f"cannot load toolset: {_one_line(exc)}") from None


def check_system_prompt(loaded: LoadedConfig, report: _Reporter) -> None:
    """The system prompt the agent will be registered with can be had: a readable UTF-8
    ``system_prompt_file``, and one of the two keys for a toolset without a built-in prompt (register_agents
    would refuse either only after deployment)."""
    agent = loaded.config.agent
    if agent.system_prompt_file is not None:
        path = loaded.resolve(agent.system_prompt_file)
        try:
            path.read_text(encoding="utf-8")
        except OSError as exc:
            raise report.error(
                ("agent", "system_prompt_file"), f"{path}: cannot be read: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise report.error(("agent", "system_prompt_file"), f"{path}: not UTF-8 text") from None
    elif agent.system_prompt is None and agent.toolset != "support":
        raise report.error(
            ("agent", "toolset"),
            f"toolset '{agent.toolset}' has no built-in prompt: set agent.system_prompt or "
            "agent.system_prompt_file",
        )


def check_live_traffic(loaded: LoadedConfig, report: _Reporter) -> None:
    """Replayed live traffic has inputs to send: each row a JSON object with a text ``input``, at least one
    (the promote step reads them only after the evaluation and the decision)."""
    from agent_release.pipelines.dag import live_inputs_of

    if not loaded.config.promote.live_traffic.enabled:
        return
    try:
        live_inputs_of(loaded)
    except ValueError as exc:
        raise report.error(("promote", "live_traffic", "inputs"), str(exc)) from None


def check_tracking(loaded: LoadedConfig, report: _Reporter) -> None:
    """The tracking URI the run will use has a scheme MLflow can track to (an outage is found at run time; a
    typo here): ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``. And an experiment name MLflow accepts."""
    from agent_release.pipelines.tracking import unsupported_tracking_uri

    tracking = loaded.config.tracking
    if not tracking.experiment.strip():
        raise report.error(("tracking", "experiment"), "must name an MLflow experiment, got an empty name")
    uri = tracking.uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI") if uri is None else None
    if uri is None and not from_env:
        return
    problem = unsupported_tracking_uri(uri or from_env or "")
    if problem is None:
        return
    if uri is not None:
        raise report.error(("tracking", "uri"), f"{uri!r}: {problem}")
    raise report.error(("tracking", "uri"), f"unset, so $MLFLOW_TRACKING_URI {from_env!r} is used: {problem}")


def check_canary_traffic(loaded: LoadedConfig, report: _Reporter) -> list[str]:
    """Bakes whose replayed traffic cannot reach ``promote.guards.min_invocations`` challenger calls.

    A canary step short of them at ``bake_s`` bakes on up to ``max_bake_s``; one still short then is not
    judged by the guards, and ``guards.unjudged`` rolls the canary back (or promotes on the offline evidence
    alone). A shadow phase is never extended. Warnings, not errors: the canary still runs and says so.
    """
    promote = loaded.config.promote
    rate = promote.live_traffic.requests_per_s
    warnings: list[str] = []
    for thin in thin_bakes(promote):
        shares = ", ".join(f"{p:g}%" for p in thin.percents)
        calls = ", ".join(f"{c:.3g}" for c in thin.expected_calls)
        what = "canary step" if thin.phase == "canary" else "shadow phase at"
        plural = "s" if len(thin.percents) > 1 else ""
        key: tuple[str, ...] = (
            ("promote", "bake_s") if thin.phase == "canary" else ("promote", "shadow", "bake_s")
        )
        fix = (
            f"{'.'.join(key)}: {thin.sufficient_bake_s:g} would suffice"
            if thin.sufficient_bake_s is not None
            else "raise promote.live_traffic.requests_per_s"
        )
        share = "share" if plural else shares
        short = (
            f"{what}{plural} {shares} expect{'' if plural else 's'} about {calls} challenger calls "
            f"({rate:g} req/s x {thin.bake_s:g} s x {share}), fewer than promote.guards.min_invocations "
            f"({thin.min_calls})"
        )
        warnings.append(report.line(key, f"{short}: {_what_follows(thin, promote.guards.unjudged)}; {fix}"))
    return warnings


def _what_follows(thin: ThinBake, policy: str) -> str:
    """What the run will do with a thin bake: extend it, roll back, or promote unjudged."""
    if thin.phase == "shadow":
        return "the guards cannot judge the shadow phase (the canary steps still do)"
    if not thin.unjudged_percents:
        return f"the step bakes up to {thin.limit_s:g} s (promote.max_bake_s) waiting for them"
    steps = "/".join(f"{p:g}" for p in thin.unjudged_percents)
    outcome = (
        "the canary will roll back"
        if policy == "rollback"
        else "the challenger would be promoted without the guards judging it"
    )
    return (
        f"even at {thin.limit_s:g} s (promote.max_bake_s) step {steps}% stays short, so {outcome} "
        f"(promote.guards.unjudged: {policy})"
    )
