"""Tool names and argument names the golden set and the training data expect, against the agent's tools.

``expected_tool_problems(loaded)`` returns ``(key, message)`` pairs, one per data file that expects a tool
the agent is not given, or an argument a tool does not take: a golden case expecting ``reset_pasword``, or
``{"user": ...}`` where the tool takes ``username``, can never score a match, and a model trained on such a
trajectory plans a call it cannot make. Nothing fails, so ``validate`` prints them as warnings (a golden set
may deliberately keep cases for tools an ``agent.tools`` subset leaves out).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agent_release.pipelines.config import LoadedConfig
from agent_release.steps.validate_datasets import DatasetError, case_ref, numbered_objects

SAMPLES = 3


def agent_tool_parameters(loaded: LoadedConfig) -> dict[str, set[str]] | None:
    """Tool name -> the argument names its input schema declares, for the tools the agent is given (None when
    the toolset cannot be loaded: ``check_config`` reports that)."""
    from agent_release.agents.builder import load_toolset, tool_name

    agent = loaded.config.agent
    try:
        tools = load_toolset(agent.toolset, loaded.resolve(agent.tool_data_dir), agent.tools)
    except Exception:  # a user factory may raise anything; check_tools names it
        return None
    parameters: dict[str, set[str]] = {}
    for tool in tools:
        schema = (getattr(tool, "tool_spec", None) or {}).get("inputSchema", {}).get("json", {})
        properties = schema.get("properties") if isinstance(schema, Mapping) else None
        parameters[tool_name(tool)] = set(properties) if isinstance(properties, Mapping) else set()
    return parameters


def _mismatches(calls: Any, tools: Mapping[str, set[str]]) -> list[str]:
    """What in one row's expected calls the agent's tools cannot match: ``'name'`` or ``'name(argument)'``."""
    found: list[str] = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, Mapping):
            continue
        name = str(call.get("name"))
        if name not in tools:
            found.append(f"'{name}'")
            continue
        arguments = call.get("arguments")
        for argument in arguments if isinstance(arguments, Mapping) else {}:
            if str(argument) not in tools[name]:
                found.append(f"'{name}({argument})'")
    return found


def _summary(rows: Iterable[tuple[str, list[str]]]) -> tuple[int, list[str], list[str]]:
    """(rows with a mismatch, the distinct mismatches in first-seen order, sample row refs)."""
    count = 0
    what: dict[str, None] = {}  # an ordered set
    refs: list[str] = []
    for ref, mismatches in rows:
        if mismatches:
            count += 1
            what.update(dict.fromkeys(mismatches))
            if len(refs) < SAMPLES:
                refs.append(ref)
    return count, list(what), refs


def _describe(tools: Mapping[str, set[str]]) -> str:
    return ", ".join(f"{name}({', '.join(sorted(args))})" for name, args in sorted(tools.items()))


def expected_tool_problems(loaded: LoadedConfig) -> list[tuple[tuple[str, ...], str]]:
    """``(key, message)`` for the evaluation dataset and the training data, where they expect tools or
    arguments the agent's tools do not have."""
    tools = agent_tool_parameters(loaded)
    if tools is None:
        return []
    problems: list[tuple[tuple[str, ...], str]] = []
    name = loaded.config.evaluate.dataset
    spec = loaded.config.datasets.get(name)
    if spec is not None:
        try:
            rows = numbered_objects(loaded.resolve(spec.path))
        except DatasetError:
            rows = []  # the dataset's own check names what is wrong with it
        summary = _summary(
            (case_ref(r, n), _mismatches(r.get("expected_tool_calls"), tools)) for n, r in rows
        )
        if summary[0]:
            problems.append(
                (
                    ("datasets", name, "path"),
                    f"{summary[0]} cases expect {', '.join(summary[1])} (e.g. {', '.join(summary[2])}), which "
                    f"the agent's tools do not have, so they cannot match; its tools: {_describe(tools)}",
                )
            )
    train = loaded.config.train
    if train is not None and train.enabled:
        problems.extend(_training_problems(loaded.resolve(train.data), tools))
    return problems


def _training_problems(path: Path, tools: Mapping[str, set[str]]) -> list[tuple[tuple[str, ...], str]]:
    try:
        rows = numbered_objects(path)
    except DatasetError:
        return []  # check_train names it
    summary = _summary((f"line {n}", _mismatches(r.get("trajectory"), tools)) for n, r in rows)
    if not summary[0]:
        return []
    return [
        (
            ("train", "data"),
            f"{summary[0]} training examples call {', '.join(summary[1])} (e.g. {', '.join(summary[2])}), "
            f"which the agent's tools do not have: the trained model will plan calls it cannot make; its "
            f"tools: {_describe(tools)}",
        )
    ]
