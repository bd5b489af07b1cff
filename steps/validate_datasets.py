"""Pipeline step: check the evaluation datasets against their Great Expectations data contracts.

``validate_datasets({"golden": DatasetSpec(path=..., suite=...)}, base_dir)`` loads each JSONL file, flattens
it into one row per case, runs its suite (JSON beside the data) in an ephemeral GE context, and returns a
:class:`DatasetValidationReport` with each file's SHA-256 (pinned by the pipeline), row and cluster counts and
the failed expectations with sample case ids. Failing data is a result (``success=False``), not an
exception; a dataset with no rows fails without running its suite (one failure line, not one per
expectation). A missing or unparsable file (not UTF-8, not JSON) raises :class:`DatasetError` naming it.

The flattened table has the columns the suites name: ``id``, ``input``, ``cluster``, one column per key of
``tags`` (the demo's ``intent`` and ``difficulty``, and any other a project tags its cases with, e.g.
``priority``; a tag named like one of the other columns is left out), ``expected_tools`` (comma-joined tool
names), ``n_expected_facts``, and ``cluster_size`` (how many cases share the row's cluster, so "at least N
cases per cluster" is a plain column expectation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_release.agents.validation_messages import first_error
from agent_release.steps.project_paths import project_path

logger = logging.getLogger(__name__)

SAMPLE_IDS = 5
_TABLE_COLUMNS = ("id", "input", "cluster", "intent", "difficulty", "expected_tools", "n_expected_facts")
# Columns the table computes: a tag of the same name cannot be a column too.
_COMPUTED_COLUMNS = frozenset({*_TABLE_COLUMNS, "case_ref", "cluster_size"}) - {"intent", "difficulty"}


class DatasetError(ValueError):
    """A dataset or suite file is missing or cannot be parsed (message is one line)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetSpec(_Frozen):
    """One dataset to validate; paths are relative to the directory of pipeline.yaml."""

    path: str = Field(description="JSONL file of evaluation cases, e.g. datasets/support/golden.jsonl.")
    suite: str = Field(
        description="Great Expectations suite (JSON) for it, e.g. datasets/support/golden.suite.json."
    )


class ExpectationFailure(_Frozen):
    """One failed expectation."""

    expectation: str
    column: str | None
    unexpected_count: int
    sample_ids: tuple[str, ...] = ()
    detail: str = ""


class DatasetResult(_Frozen):
    """The outcome for one dataset."""

    name: str
    path: str
    sha256: str
    n_rows: int
    n_clusters: int
    success: bool
    failures: tuple[ExpectationFailure, ...] = ()


class DatasetValidationReport(_Frozen):
    """All datasets' outcomes; ``success`` is True only when every dataset passed."""

    success: bool
    datasets: tuple[DatasetResult, ...]

    def dataset(self, name: str) -> DatasetResult:
        """The result for dataset ``name``; raises ``KeyError`` when absent."""
        for result in self.datasets:
            if result.name == name:
                return result
        raise KeyError(name)

    def summary_lines(self) -> list[str]:
        """One readable line per dataset that passed and per failure (see :meth:`failure_lines`)."""
        lines = []
        for d in self.datasets:
            if d.success:
                lines.append(
                    f"{d.name}: ok ({d.n_rows} rows, {d.n_clusters} clusters, sha256 {d.sha256[:12]})"
                )
            else:
                lines += _failure_lines(d)
        return lines

    def failure_lines(self) -> list[str]:
        """One readable line per failure of the datasets that failed (empty when every dataset passed)."""
        return [line for d in self.datasets if not d.success for line in _failure_lines(d)]


def _failure_lines(d: DatasetResult) -> list[str]:
    if d.n_rows == 0:
        return [f"dataset {d.name} ({d.path}) has no rows"]
    lines = []
    for f in d.failures:
        target = f"({f.column})" if f.column else ""
        what = f"{f.unexpected_count} rows" if f.unexpected_count else (f.detail or "failed")
        sample = f", e.g. {', '.join(f.sample_ids)}" if f.sample_ids else ""
        lines.append(f"{d.name}: {f.expectation}{target} failed: {what}{sample}")
    return lines or [f"{d.name}: failed its data contract"]


def read_cases(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; raises :class:`DatasetError` naming the first bad line."""
    return [row for _, row in numbered_objects(path)]


def numbered_objects(path: Path, data: bytes | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) for each non-blank line of a JSONL file (of ``data``, its bytes, when the
    caller already read them: the validation hashes the very bytes it validates).

    Raises :class:`DatasetError` (one line) for a file that cannot be read, is not UTF-8 (naming line and
    byte offset), or has a line that is not JSON or not an object (naming the line).
    """
    if data is None:
        data = read_dataset_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(_not_utf8(path, data, exc)) from None
    rows = []
    # JSON Lines end at "\n" (a "\r" before it is JSON whitespace): str.splitlines() also split at U+2028,
    # U+0085 and other characters a JSON string may hold unescaped, so a valid case read as broken JSON.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object")
        rows.append((number, row))
    return rows


def read_dataset_bytes(path: Path) -> bytes:
    """The bytes of a dataset file; :class:`DatasetError` (one line) when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror}") from exc


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError) -> str:
    """``<path>:<line>: not valid UTF-8 (byte 0xNN at offset N)``: where an editor or ``xxd`` finds it."""
    line = data.count(b"\n", 0, exc.start) + 1
    return f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"


def cases_frame(rows: list[dict[str, Any]]) -> Any:
    """The flattened pandas table the suites validate (see the module docstring)."""
    import pandas as pd

    def tag(row: dict[str, Any], key: str) -> Any:
        tags = row.get("tags")
        value = tags.get(key) if isinstance(tags, dict) else None
        # An object or array is unhashable for pandas' set checks: the contract sees its text.
        return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value

    def tools(row: dict[str, Any]) -> Any:
        calls = row.get("expected_tool_calls")
        if not isinstance(calls, list):
            return None
        return ",".join(str(c.get("name")) if isinstance(c, dict) else "?" for c in calls)

    def facts(row: dict[str, Any]) -> Any:
        value = row.get("expected_facts")
        return len(value) if isinstance(value, list) else None

    def cluster(row: dict[str, Any]) -> Any:
        # A JSON object or array is unhashable (pandas cannot group by it): the contract sees it as the text
        # the evaluation clusters it by (``str``).
        value = row.get("cluster")
        return str(value) if isinstance(value, dict | list) else value

    tag_columns = sorted(
        {
            str(key)
            for row in rows
            if isinstance(row.get("tags"), dict)
            for key in row["tags"]
            if str(key) not in _COMPUTED_COLUMNS and key not in ("intent", "difficulty")
        }
    )
    records = []
    for number, row in enumerate(rows, 1):
        record: dict[str, Any] = {
            "id": row.get("id"),
            "input": row.get("input"),
            "cluster": cluster(row),
        }
        record.update(intent=tag(row, "intent"), difficulty=tag(row, "difficulty"))
        record.update(expected_tools=tools(row), n_expected_facts=facts(row))
        record.update({key: tag(row, key) for key in tag_columns})
        record["case_ref"] = case_ref(row, number)
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=[*_TABLE_COLUMNS, *tag_columns, "case_ref"])
    # A column absent from every row is dropped so that the suite's column-exists expectation reports it.
    present = [c for c in _TABLE_COLUMNS if any(c in _row_keys(r) for r in rows)]
    frame = frame[[*present, *tag_columns, "case_ref"]]
    if "cluster" in frame:
        frame["cluster_size"] = frame.groupby("cluster", dropna=True)["case_ref"].transform("count")
    return frame


def case_ref(row: Mapping[str, Any], number: int) -> str:
    """How a failure sample names the ``number``-th row: its case id, or its line when the id is missing."""
    case_id = row.get("id")
    return str(case_id) if case_id not in (None, "") else f"line {number}"


def case_cluster(case: Mapping[str, Any]) -> str:
    """The cluster a golden case counts in, for the evaluation, the gate and ``plan`` alike: its ``cluster``,
    or its own id when it has none (empty or null included), making it a cluster of its own."""
    return str(case.get("cluster") or case.get("id"))


def case_shape_failures(rows: list[dict[str, Any]]) -> list[ExpectationFailure]:
    """What every evaluation case needs whatever its suite says: the shape the evaluation step reads.

    A case without an id or a text ``input``, with an id another case has too (compared as text, as the
    evaluation keys its rows), with ``tags`` that are not an object, or expectations of the wrong JSON type
    (an expected tool call is an object with a non-empty ``name`` and, if given, an ``arguments`` object)
    would otherwise pass a suite that does not check it, and stop the run at evaluation, after training and
    deployment. Each rule failed is one :class:`ExpectationFailure` with sample refs.
    """
    ids = Counter(str(r.get("id")) for r in rows if r.get("id") not in (None, ""))
    shared = {case_id for case_id, count in ids.items() if count > 1}
    rules: list[tuple[str, str, Any]] = [
        ("case_has_an_id", "id", lambda r: r.get("id") not in (None, "")),
        ("case_id_is_unique", "id", lambda r: r.get("id") in (None, "") or str(r.get("id")) not in shared),
        ("case_has_a_text_input", "input", lambda r: isinstance(r.get("input"), str) and r["input"].strip()),
        ("case_tags_are_an_object", "tags", lambda r: isinstance(r.get("tags", {}), dict)),
        (
            "case_expected_facts_are_a_list",
            "expected_facts",
            lambda r: isinstance(r.get("expected_facts", []), list),
        ),
        (
            "case_expected_tool_calls_are_objects",
            "expected_tool_calls",
            lambda r: (
                isinstance(calls := r.get("expected_tool_calls", []), list)
                and all(
                    isinstance(c, dict)
                    and isinstance(c.get("name"), str)
                    and c["name"].strip()
                    and isinstance(c.get("arguments", {}), dict)
                    for c in calls
                )
            ),
        ),
    ]
    failures = []
    for expectation, column, holds in rules:
        refs = [case_ref(row, number) for number, row in enumerate(rows, 1) if not holds(row)]
        if refs:
            failures.append(
                ExpectationFailure(
                    expectation=expectation,
                    column=column,
                    unexpected_count=len(refs),
                    # Each id once, as GE's samples: a duplicate id is then said once, not twice.
                    sample_ids=tuple(dict.fromkeys(refs))[:SAMPLE_IDS],
                )
            )
    return failures


def _row_keys(row: dict[str, Any]) -> set[str]:
    keys = set(row)
    tags = row.get("tags")
    if isinstance(tags, dict):
        keys |= {k for k in ("intent", "difficulty") if k in tags}
    if "expected_tool_calls" in row:
        keys.add("expected_tools")
    if "expected_facts" in row:
        keys.add("n_expected_facts")
    return keys


def load_suite(path: Path) -> Any:
    """A ``great_expectations.ExpectationSuite`` from its JSON file; raises :class:`DatasetError`."""
    import great_expectations as gx

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read suite {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(_not_utf8(path, data, exc)) from None
    try:
        document = json.loads(text)
        invalid = _invalid_expectation(document.get("expectations") if isinstance(document, dict) else None)
        if invalid is None:
            return gx.ExpectationSuite(**document)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: not an expectation suite ({str(exc).splitlines()[0]})") from exc
    raise DatasetError(f"{path}: {invalid}")


def _invalid_expectation(entries: Any) -> str | None:
    """Why an entry of a suite's ``expectations`` cannot be built, else None.

    ``ExpectationSuite`` logs such an entry with a traceback and leaves it out, so a misspelt expectation
    type would silently weaken the contract; it is an error here instead.
    """
    from great_expectations.exceptions.exceptions import (
        ExpectationNotFoundError,
        InvalidExpectationConfigurationError,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from pydantic import ValidationError as PydanticError
    from pydantic.v1 import ValidationError as PydanticV1Error

    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            continue  # ExpectationSuite raises TypeError for it
        try:
            ExpectationConfiguration(**entry).to_domain_obj()
        except ExpectationNotFoundError:
            return f"expectations[{index}]: unknown expectation type {entry.get('type')!r}"
        except InvalidExpectationConfigurationError as exc:
            return f"expectations[{index}] ({entry.get('type')}): {str(exc).strip().splitlines()[0]}"
        except (PydanticError, PydanticV1Error) as exc:
            # GE checks an expectation's kwargs with pydantic: name the entry and the field, not only the model.
            return f"expectations[{index}] ({entry.get('type')}): {first_error(exc)}"
    return None


def _quiet_great_expectations() -> None:
    # GE sends usage analytics and draws tqdm bars by default; a pipeline step must do neither.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("great_expectations", "great_expectations.core", "great_expectations.datasource"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _failures(validation: Any) -> list[ExpectationFailure]:
    failures = []
    for result in validation.results:
        if result.success:
            continue
        config = result.expectation_config
        info = result.result or {}
        samples: dict[str, None] = {}  # the first SAMPLE_IDS distinct rows, in order
        for entry in info.get("partial_unexpected_index_list") or info.get("unexpected_index_list") or []:
            samples.setdefault(str(entry.get("case_ref")) if isinstance(entry, dict) else str(entry))
            if len(samples) == SAMPLE_IDS:
                break
        exception = _exception_message(result.exception_info)
        detail = ""
        if "observed_value" in info:
            detail = f"observed {info['observed_value']}"
        elif exception:
            detail = str(exception).splitlines()[0]
        failures.append(
            ExpectationFailure(
                expectation=str(config.type),
                column=config.kwargs.get("column"),
                unexpected_count=int(info.get("unexpected_count") or 0),
                sample_ids=tuple(samples),
                detail=detail,
            )
        )
    return failures


def _exception_message(info: Any) -> str | None:
    """The message of an expectation that raised: flat, or keyed by metric (GE 1.x), else None."""
    if not isinstance(info, dict):
        return None
    if info.get("exception_message"):
        return str(info["exception_message"])
    for value in info.values():
        if isinstance(value, dict) and value.get("exception_message"):
            return str(value["exception_message"])
    return None


def validate_datasets(datasets: Mapping[str, DatasetSpec], base_dir: Path) -> DatasetValidationReport:
    """Validate every dataset against its suite; see the module docstring for what is checked."""
    _quiet_great_expectations()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("agent_release_datasets")
    results = []
    for name, spec in datasets.items():
        data_path = project_path(base_dir, spec.path)
        data = read_dataset_bytes(data_path)
        rows = [row for _, row in numbered_objects(data_path, data)]
        suite = load_suite(project_path(base_dir, spec.suite))
        digest = hashlib.sha256(data).hexdigest()  # of the bytes validated, not of a second read
        if not rows:
            # Every expectation of the suite would fail on an empty table and bury the one real problem.
            results.append(
                DatasetResult(
                    name=name,
                    path=spec.path,
                    sha256=digest,
                    n_rows=0,
                    n_clusters=0,
                    success=False,
                )
            )
            logger.info("dataset=<%s>, path=<%s> | dataset has no rows", name, spec.path)
            continue
        suite.name = f"{name}:{suite.name}"
        frame = cases_frame(rows)
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}-all")
        definition = gx.ValidationDefinition(
            name=f"{name}-contract", data=batch, suite=context.suites.add(suite)
        )
        validation = definition.run(
            batch_parameters={"dataframe": frame},
            # SUMMARY: the count of unexpected rows and the first few of them. COMPLETE listed every one: 40,000
            # failing rows took 14.4 s (6.9 s now), 100,000 took minutes and 960 MB on a busy machine.
            result_format={
                "result_format": "SUMMARY",
                "unexpected_index_column_names": ["case_ref"],
                "partial_unexpected_count": 4 * SAMPLE_IDS,
            },
        )
        contract = _failures(validation)
        # A shape rule the suite already reported for the same rows (e.g. a null input) is not said twice.
        reported = {(f.column, f.unexpected_count, f.sample_ids) for f in contract}
        shape = [
            f
            for f in case_shape_failures(rows)
            if (f.column, f.unexpected_count, f.sample_ids) not in reported
        ]
        failures = shape + contract
        n_clusters = len({case_cluster(row) for row in rows})  # counted as the evaluation counts them
        results.append(
            DatasetResult(
                name=name,
                path=spec.path,
                sha256=digest,
                n_rows=len(rows),
                n_clusters=n_clusters,
                success=bool(validation.success) and not failures,
                failures=tuple(failures),
            )
        )
        logger.info(
            "dataset=<%s>, rows=<%d>, clusters=<%d>, failures=<%d> | validated",
            name,
            len(rows),
            n_clusters,
            len(failures),
        )
    return DatasetValidationReport(success=all(r.success for r in results), datasets=tuple(results))
