"""The one typed configuration of a pipeline: ``pipeline.yaml`` as a frozen pydantic model.

Each step owns the model of its own section (in ``steps/``) and receives only that section; this module
composes them, adds the pipeline-level sections (tracking, schedule, SageMaker target) and loads YAML with
errors that name the key path and the line. Unknown keys are errors everywhere (``extra="forbid"``).

Call :func:`load_config` (path) -> :class:`LoadedConfig`; ``agent-release schema`` prints
``PipelineConfig.model_json_schema()``.
"""

from __future__ import annotations

import enum
import math
import os
import re
import types
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from agent_release.pipelines.schedule_expression import schedule_problem
from agent_release.steps.backend import Frozen
from agent_release.steps.decide_promotion import DecisionConfig
from agent_release.steps.deploy_variants import DeployConfig
from agent_release.steps.evaluate_config import EvaluateConfig
from agent_release.steps.project_paths import project_path
from agent_release.steps.promote_config import PromotionConfig
from agent_release.steps.register_agents_config import AGENT_NAME, BUILT_IN_TOOLSET, AgentConfig
from agent_release.steps.train_model import TrainConfig
from agent_release.steps.validate_datasets import DatasetSpec

# Values pipeline.yaml may hold once its aliases are expanded: a real one holds a few hundred.
MAX_EXPANDED_VALUES = 100_000


class ConfigError(ValueError):
    """pipeline.yaml is unreadable or invalid; the message is one line naming the key path and line."""


class TrackingConfig(Frozen):
    """Where MLflow tracks runs, traces, prompts and models."""

    uri: str | None = Field(
        default=None,
        description="MLflow tracking URI. None: $MLFLOW_TRACKING_URI if set, else SQLite under the state "
        "directory. A SageMaker managed MLflow tracking server ARN also works (needs sagemaker-mlflow). Its "
        "scheme must be one MLflow has a store for (validate checks).",
    )
    experiment: str = Field(default="agent-release", description="MLflow experiment name.")


class ScheduleConfig(Frozen):
    """When the SageMaker target starts the pipeline by itself."""

    cron: str | None = Field(
        default=None,
        description=(
            "EventBridge Scheduler expression, e.g. 'cron(0 3 ? * MON *)', 'rate(1 day)' or "
            "'at(2026-12-24T10:00:00)'; validate checks it by the Scheduler's rules."
        ),
    )
    on_new_package: bool = Field(
        default=False,
        description="Start an execution when a model package is registered in the deploy package group.",
    )

    @field_validator("cron")
    @classmethod
    def _known_expression(cls, value: str | None) -> str | None:
        if value is not None and (problem := schedule_problem(value)) is not None:
            raise ValueError(problem)
        return value


class SageMakerConfig(Frozen):
    """Settings of the SageMaker Pipelines target (ignored by local runs)."""

    pipeline_name: str | None = Field(default=None, description="Pipeline name (default: `name`).")
    region: str = Field(default="us-east-1", description="AWS region.")
    role_arn: str | None = Field(
        default=None,
        description="Execution role of the pipeline, its steps and its schedule/trigger, e.g. "
        "`arn:aws:iam::<account>:role/agent-release-pipeline`. No default: compile, upsert, start, executions "
        "and iam-policy refuse a project without it; local runs ignore it.",
    )
    bucket: str | None = Field(
        default=None,
        description="S3 bucket for step code, datasets and artifacts (default: `sagemaker-<region>-<account of role_arn>`).",
    )
    instance_type: str = Field(default="ml.m5.large", description="Instance type of the @step jobs.")
    image_uri: str | None = Field(
        default=None,
        description="Container image of the @step jobs; it must contain agent-release (docs/aws.md has the "
        "Dockerfile). Default: `<account>.dkr.ecr.<region>.amazonaws.com/agent-release:<version>`.",
    )
    serving_image_uri: str | None = Field(
        default=None,
        description="Serving image for demo/python/openai_compatible models on SageMaker endpoints "
        "(container-kind packages bring their own image).",
    )
    mlflow_tracking_arn: str | None = Field(
        default=None, description="SageMaker managed MLflow tracking server ARN."
    )
    eval_shards: int = Field(
        default=1, ge=1, le=64, description="Evaluation shards run as parallel steps (at most 64)."
    )

    # What AWS accepts, checked when the file loads: otherwise `upsert` uploads the step code and project files
    # first and only CreatePipeline (or S3, or the SDK's role lookup) refuses, with a message naming no key.
    # CreatePipeline's PipelineName: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$
    PIPELINE_NAME: ClassVar[re.Pattern[str]] = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,255}")
    REGION: ClassVar[re.Pattern[str]] = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
    # Every partition (aws, aws-cn, aws-us-gov, ...); a role path may hold slashes: role/service-role/name.
    ROLE_ARN: ClassVar[re.Pattern[str]] = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
    BUCKET: ClassVar[re.Pattern[str]] = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
    ROLE_ARN_MISSING: ClassVar[str] = (
        "sagemaker.role_arn is not set: the SageMaker target needs the pipeline's execution role, e.g. "
        "role_arn: arn:aws:iam::<account>:role/agent-release-pipeline under sagemaker: (docs/aws.md, step 2)"
    )

    @field_validator("pipeline_name")
    @classmethod
    def _sagemaker_pipeline_name(cls, value: str | None) -> str | None:
        if value is not None and not cls.PIPELINE_NAME.fullmatch(value):
            raise ValueError(
                f"{cls._clip(value)!r} is not a SageMaker pipeline name: use letters, digits and hyphens, "
                "starting and ending with a letter or digit (at most 256)"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region_code(cls, value: str) -> str:
        if not cls.REGION.fullmatch(value):
            raise ValueError(f"{cls._clip(value)!r} is not an AWS region code (e.g. us-east-1, eu-west-1)")
        return value

    @field_validator("role_arn")
    @classmethod
    def _iam_role_arn(cls, value: str | None) -> str | None:
        if value is not None and not cls.ROLE_ARN.fullmatch(value):
            raise ValueError(
                f"{cls._clip(value)!r} is not an IAM role ARN (expected arn:aws:iam::<12-digit account>:role/<name>)"
            )
        return value

    def execution_role(self) -> str:
        """``role_arn``; :class:`ConfigError` saying to set it when the project does not.

        Everything that writes a definition or a policy embedding the role, or acts on the pipeline in AWS,
        asks for the role through this: a default role would silently name an account that is not the user's.
        """
        if self.role_arn is None:
            raise ConfigError(self.ROLE_ARN_MISSING)
        return self.role_arn

    @field_validator("bucket")
    @classmethod
    def _s3_bucket_name(cls, value: str | None) -> str | None:
        if value is not None and (problem := cls.bucket_problem(value)) is not None:
            raise ValueError(f"{cls._clip(value)!r} is not an S3 bucket name: {problem}")
        return value

    @classmethod
    def bucket_problem(cls, name: str) -> str | None:
        """Why S3 refuses ``name`` as a general-purpose bucket name (CreateBucket's rules), or None."""
        if name.startswith("s3://") or "/" in name:
            return "give the bucket name alone, without s3:// or a prefix"
        if not cls.BUCKET.fullmatch(name):
            return "use 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
        if ".." in name or ".-" in name or "-." in name:
            return "dots may not be next to each other or to a hyphen"
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
            return "it may not look like an IP address"
        if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(
            ("-s3alias", "--ol-s3", "--x-s3")
        ):
            return "the prefix or suffix is reserved by S3"
        return None

    @staticmethod
    def _clip(value: str, limit: int = 80) -> str:
        # A runaway value (a pasted file, a 300-character name) must keep the error one readable line.
        return value if len(value) <= limit else f"{value[:limit]}..."


class PipelineConfig(Frozen):
    """pipeline.yaml: the one definition a user edits."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,79}$",
        description="Pipeline name (letters, digits, hyphens): names the SageMaker pipeline and the runs.",
    )
    description: str = Field(default="", description="Free text shown in reports.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking.")
    datasets: dict[str, DatasetSpec] = Field(
        description="Golden datasets with their data contracts, by name.", min_length=1
    )
    train: TrainConfig | None = Field(default=None, description="Optional retraining step.")
    deploy: DeployConfig = Field(description="Endpoint and variants.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="The agent registered per variant.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Offline evaluation.")
    decide: DecisionConfig = Field(default_factory=DecisionConfig, description="The promotion gate.")
    promote: PromotionConfig = Field(default_factory=PromotionConfig, description="Progressive shift.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Schedules and triggers.")
    sagemaker: SageMakerConfig = Field(default_factory=SageMakerConfig, description="SageMaker target.")

    @model_validator(mode="after")
    def _cross_references(self) -> PipelineConfig:
        # Each message starts with the key it is about: format_validation_error reports its line.
        if self.evaluate.dataset not in self.datasets:
            raise ValueError(
                f"evaluate.dataset: '{self.evaluate.dataset}' is not declared under datasets "
                f"(declared: {', '.join(sorted(self.datasets))})"
            )
        if self.agent.system_prompt is not None and self.agent.system_prompt_file is not None:
            raise ValueError("agent.system_prompt_file: give system_prompt or system_prompt_file, not both")
        if (
            self.train is not None
            and self.train.enabled
            and self.train.package_group != self.deploy.package_group
        ):
            raise ValueError(
                f"train.package_group: '{self.train.package_group}' differs from deploy.package_group "
                f"'{self.deploy.package_group}': the trained challenger would never be deployed"
            )
        return self

    @model_validator(mode="after")
    def _agent_name_of_a_user_toolset(self) -> PipelineConfig:
        # agent.name's default is the demo's, "support-agent": a project with its own toolset that leaves the
        # name out would register its agent, prompt and versions under the demo's MLflow names (mixed with
        # the support agent's on a shared tracking server). It takes the project's endpoint name instead.
        agent = self.agent
        if (
            agent.toolset != BUILT_IN_TOOLSET
            and "name" not in agent.model_fields_set
            and AGENT_NAME.fullmatch(self.deploy.endpoint_name)
        ):
            object.__setattr__(self, "agent", agent.model_copy(update={"name": self.deploy.endpoint_name}))
        return self


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from (relative paths resolve against ``base_dir``)."""

    config: PipelineConfig
    path: Path
    base_dir: Path
    text: str

    def resolve(self, relative: str, *, keep_links: bool = False) -> Path:
        """Resolve a path from pipeline.yaml against the file's directory.

        With ``keep_links`` the path is only normalised (``a/../b`` is ``b``), not followed through
        symlinks: the name pipeline.yaml uses, which is where a copy of the project must hold the file.
        """
        path = project_path(self.base_dir, relative)
        if Path(relative).expanduser().is_absolute():
            return path
        return Path(os.path.normpath(path)) if keep_links else path.resolve()

    def referenced_files(self, *, keep_links: bool = False) -> list[tuple[str, Path]]:
        """Every file the config points at, as (key path, resolved path); see :meth:`resolve`."""
        c = self.config
        refs: list[tuple[str, str]] = []
        for name, ds in c.datasets.items():
            refs.append((f"datasets.{name}.path", ds.path))
            refs.append((f"datasets.{name}.suite", ds.suite))
        if c.train is not None and c.train.enabled:
            refs.append(("train.data", c.train.data))
        if c.agent.system_prompt_file is not None:
            refs.append(("agent.system_prompt_file", c.agent.system_prompt_file))
        refs.append(("agent.tool_data_dir", c.agent.tool_data_dir))
        if c.promote.live_traffic.enabled:
            refs.append(("promote.live_traffic.inputs", c.promote.live_traffic.inputs))
        return [(key, self.resolve(relative, keep_links=keep_links)) for key, relative in refs]


def _line_index(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    """Map every key path in the composed YAML tree to its 1-based line."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _duplicate_key(node: yaml.Node, path: tuple[str | int, ...]) -> tuple[str, int] | None:
    """The dotted path and line of the first key repeated within one mapping, at any depth."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if isinstance(key, str) and key != "<<":
                if key in seen:
                    return ".".join(str(p) for p in (*path, key)), key_node.start_mark.line + 1
                seen.add(key)
            found = _duplicate_key(value_node, (*path, key))
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, (*path, i))
            if found is not None:
                return found
    return None


def _check_aliases(node: yaml.Node, source: str, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` holds with every alias expanded; :class:`ConfigError` when that has no end.

    An alias is the very node its anchor names: one that refers to itself expands forever, and a few
    nested ones ("billion laughs") expand to billions of values, which every later walk of the config
    (key lines, validation, scorer arguments) would take hours over. Each node is counted once.
    """
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError(f"{source}:{node.start_mark.line + 1}: an anchor refers to itself")
    open_.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    size = 1 + sum(_check_aliases(child, source, sizes, open_) for child in children)
    open_.discard(key)
    if size > MAX_EXPANDED_VALUES:
        raise ConfigError(
            f"{source}:{node.start_mark.line + 1}: aliases expand to more than {MAX_EXPANDED_VALUES} values"
        )
    sizes[key] = size
    return size


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Every key path of the YAML ``text`` mapped to its 1-based line (empty when it does not parse)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    return lines


def line_of_key(lines: dict[tuple[str | int, ...], int], key: tuple[str | int, ...]) -> int | None:
    """The line of ``key`` in :func:`key_lines`' map, else of its nearest parent that is in the file."""
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return None


def _first_error_line(err: dict[str, Any], lines: dict[tuple[str | int, ...], int]) -> int | None:
    loc = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-")))
    return line_of_key(lines, loc)


def format_validation_error(
    exc: ValidationError, lines: dict[tuple[str | int, ...], int], source: str
) -> str:
    """One line: the first error's key path, line and message, plus how many more errors there are."""
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0])
    msg = str(first.get("msg", "invalid"))
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif first.get("type") == "missing":
        msg = "required key is missing"
    elif first.get("type") == "value_error":
        msg = msg.removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
        keyed = re.fullmatch(r"([a-z_]+(?:\.[a-z_]+)*): (.*)", msg)
        if not first.get("loc") and keyed is not None and tuple(keyed.group(1).split(".")) in lines:
            # A whole-config check (a cross-reference) names its key first, "evaluate.dataset: ...": point at it.
            first["loc"], msg = tuple(keyed.group(1).split(".")), keyed.group(2)
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(top level)"
    line = _first_error_line(first, lines)
    where = f"{source}:{line}" if line else source
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {loc}: {msg}{more}"


def _alternatives(annotation: Any) -> list[Any]:
    """The types a field accepts: a union's members (``Annotated`` and ``Optional`` unwrapped), else itself."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _alternatives(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(annotation) for t in _alternatives(arg)]
    return [annotation]


def _takes_text(alternative: Any, value: str) -> bool:
    """Whether ``alternative`` accepts the string ``value`` as text (not by parsing it as a number)."""
    if alternative is str or alternative is Any:
        return True
    if get_origin(alternative) is Literal:
        return value in get_args(alternative)
    return isinstance(alternative, type) and issubclass(alternative, enum.Enum)


def _not_a_number(annotation: Any, value: Any, plain: bool) -> str | None:
    """Why ``value`` may not stand for the number a field typed ``annotation`` wants; None when it may.

    Pydantic's lax mode takes YAML ``true`` as 1 and ``"16"`` as 16 where a number is expected: a boolean that
    slipped into a number (``concurrency: true``) or a quoted number would pass unnoticed. ``plain`` says the
    value was written without quotes: YAML 1.1 reads ``1e-3`` as text, and that stays a number.
    """
    alternatives = _alternatives(annotation)
    numbers = [t for t in alternatives if t is int or t is float]
    if numbers and isinstance(value, float) and math.isnan(value):
        # Not a number at all: a bounded field said "Input should be less than or equal to 3600".
        return "expected a number, got NaN (.nan)"
    if not numbers or Any in alternatives or not isinstance(value, bool | str):
        return None
    wanted = "a number" if float in numbers else "an integer"
    if str in alternatives:
        wanted += " or a name"
    if isinstance(value, bool):
        return None if bool in alternatives else f"expected {wanted}, got the boolean {str(value).lower()}"
    if plain or any(_takes_text(t, value) for t in alternatives):
        return None
    try:
        number = float(value)
    except ValueError:
        return None  # no number at all: the model's own message says what it expects
    shown = value if len(value) <= 40 else f"{value[:40]}..."
    hint = " (write the number without quotes)" if math.isfinite(number) else ""
    return f"expected {wanted}, got the string {shown!r}{hint}"


def _not_a_bool(annotation: Any, value: Any) -> str | None:
    """Why ``value`` may not stand for the boolean a field typed ``annotation`` wants; None when it may.

    Pydantic's lax mode takes ``"yes"``, ``"off"``, ``1`` and ``0`` as booleans: a quoted ``"false"`` or a
    count written where a switch belongs would pass unnoticed. YAML's own unquoted ``true``/``false`` (and
    YAML 1.1's ``yes``/``no``/``on``/``off``) arrive here as booleans already.
    """
    alternatives = _alternatives(annotation)
    if bool not in alternatives or Any in alternatives or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if any(_takes_text(t, value) for t in alternatives):
            return None
        shown = value if len(value) <= 40 else f"{value[:40]}..."
        return f"expected true or false, got the string {shown!r} (write true or false without quotes)"
    if isinstance(value, int | float) and not any(t is int or t is float for t in alternatives):
        return f"expected true or false, got the number {value!r}"
    return None


def _plain_scalars(node: yaml.Node, path: tuple[str | int, ...], out: set[tuple[str | int, ...]]) -> None:
    """Collect the key path of every scalar of the composed YAML tree written without quotes."""
    if isinstance(node, yaml.ScalarNode) and node.style is None:
        out.add(path)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _plain_scalars(value_node, (*path, key_node.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _plain_scalars(item, (*path, i), out)


def lax_scalar(
    annotation: Any,
    value: Any,
    key: tuple[str | int, ...] = (),
    plain: Collection[tuple[str | int, ...]] = frozenset(),
) -> tuple[tuple[str | int, ...], str] | None:
    """The key path of the first scalar pydantic's lax mode would coerce, with why; None when there is none.

    That is a boolean or a quoted number where ``annotation`` wants a number, and a string or a number where
    it wants a boolean. ``value`` is parsed YAML checked against a config model, e.g.
    ``lax_scalar(PipelineConfig, yaml.safe_load(text))``; anything of the wrong shape is left to the model.
    A string at a key path in ``plain`` was written without quotes (e.g. ``1e-3``) and may stand for a number.
    """
    problem = _not_a_number(annotation, value, key in plain) or _not_a_bool(annotation, value)
    if problem is not None:
        return key, problem
    for alternative in _alternatives(annotation):
        origin, args = get_origin(alternative), get_args(alternative)
        if isinstance(value, dict) and isinstance(alternative, type) and issubclass(alternative, BaseModel):
            for name, field in alternative.model_fields.items():
                if name in value and (
                    found := lax_scalar(field.annotation, value[name], (*key, name), plain)
                ):
                    return found
            return None
        if isinstance(value, dict) and origin in (dict, Mapping) and len(args) == 2:
            for item_key, item in value.items():
                if found := lax_scalar(args[1], item, (*key, item_key), plain):
                    return found
            return None
        if isinstance(value, list) and origin in (list, tuple, set, frozenset, Sequence) and args:
            fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
            for i, item in enumerate(value):
                item_type = (args[i] if i < len(args) else None) if fixed else args[0]
                if item_type is not None and (found := lax_scalar(item_type, item, (*key, i), plain)):
                    return found
            return None
    return None


def parse_config(text: str, source: str = "pipeline.yaml") -> PipelineConfig:
    """Parse and validate YAML text; raise :class:`ConfigError` with a one-line message."""
    try:
        return _parse_config(text, source)
    except ConfigError as exc:
        from agent_release.pipelines.executor import flatten

        # A message may quote a key, and a YAML key is any string: a line break or control character in it
        # is shown escaped, so the message stays one line (found by tests/drills/test_property_inputs.py).
        one_line = flatten(str(exc))
        if one_line == str(exc):
            raise
        raise ConfigError(one_line) from None
    except RecursionError:
        # PyYAML and pydantic recurse once per level of nesting: thousands of levels exhaust the stack.
        raise ConfigError(f"{source}: nested too deeply (thousands of levels of lists or mappings)") from None


def _mapping_sections() -> frozenset[str]:
    """Top-level keys whose value is a section (a model or a mapping) that cannot be null: ``train``, which
    may be null (no training step), and the scalars (``name``, ``description``) are not among them."""
    sections = set()
    for name, field in PipelineConfig.model_fields.items():
        annotation = field.annotation
        if (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or get_origin(
            annotation
        ) is dict:
            sections.add(name)
    return frozenset(sections)


_EMPTIABLE_SECTIONS = _mapping_sections()


def _parse_config(text: str, source: str) -> PipelineConfig:
    if not text.strip():
        raise ConfigError(f"{source}: the file is empty")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_aliases(node, source, {}, set())
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    lines: dict[tuple[str | int, ...], int] = {}
    plain: set[tuple[str | int, ...]] = set()
    if node is not None:
        duplicate = _duplicate_key(node, ())
        if duplicate is not None:
            raise ConfigError(f"{source}:{duplicate[1]}: {duplicate[0]}: duplicate key")
        _line_index(node, (), lines)
        _plain_scalars(node, (), plain)
    # A section whose keys are all commented out reads as null: take it as the empty section it looks like
    # (its defaults, or an error naming a required key), not as "Input should be a valid dictionary".
    # `train: null` keeps its meaning: no training step.
    for section in _EMPTIABLE_SECTIONS:
        if section in data and data[section] is None:
            data[section] = {}
    lax = lax_scalar(PipelineConfig, data, plain=plain)
    if lax is not None:
        key, problem = lax
        line = line_of_key(lines, key)
        where = f"{source}:{line}" if line else source
        raise ConfigError(f"{where}: {'.'.join(str(p) for p in key)}: {problem}")  # flattened by parse_config
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, lines, source)) from None


def load_config(path: Path | str) -> LoadedConfig:
    """Read and validate ``path``; raise :class:`ConfigError` (one line) on any problem."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{p}: no such file")
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected pipeline.yaml")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    config = parse_config(text, source=str(p))
    return LoadedConfig(config=config, path=p.resolve(), base_dir=p.resolve().parent, text=text)


# Keys whose defaults are the demo's files: a project that leaves them out gets the demo's path, which its own
# directory does not have. What to set instead, for the "file not found" line.
_DEMO_DEFAULT_FIXES = {
    "agent.tool_data_dir": "set agent.tool_data_dir (and agent.toolset, agent.name and a system prompt) for "
    "your agent",
    "promote.live_traffic.inputs": "set promote.live_traffic.inputs to a JSONL file of held-out inputs, or "
    "promote.live_traffic.enabled: false",
}


def _is_set(config: BaseModel, dotted: str) -> bool:
    """Whether every key along ``dotted`` was written in the file (not filled in from a default)."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in node.model_fields_set:
            return False
        node = getattr(node, part)
    return True


def check_referenced_files(loaded: LoadedConfig) -> None:
    """Raise :class:`ConfigError` naming the first referenced file that does not exist (and, for a key left
    at the demo's default path, that it was not set and what to set)."""
    for key, path in loaded.referenced_files():
        if path.exists():
            continue
        if key in _DEMO_DEFAULT_FIXES and not _is_set(loaded.config, key):
            raise ConfigError(
                f"{loaded.path}: {key}: not set, so it is the demo's default {path}, which does not exist: "
                f"{_DEMO_DEFAULT_FIXES[key]}"
            )
        raise ConfigError(f"{loaded.path}: {key}: file not found: {path}")
