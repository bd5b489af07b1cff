"""Generate docs/pipeline-yaml.md from the config model and the scorer registry, so it cannot drift.

Run ``.venv/bin/python tools/gen_config_docs.py`` after changing a config model; ``make test`` fails
(tests/unit/test_config_docs.py) when the committed file is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "pipeline-yaml.md"

INTRO = """# pipeline.yaml reference

`pipeline.yaml` is the one definition a user edits. It is validated by a frozen pydantic model
(`agent_release.pipelines.config.PipelineConfig`): unknown keys and wrong types are errors that name the key
path and the line, e.g. `pipeline.yaml:<line>: evaluate.concurency: unknown key`. Relative paths resolve
against the directory of the file. `agent-release schema` prints the JSON Schema; `agent-release validate`
checks the file, every file it references and the datasets' data contracts. Numbers have upper bounds no real
configuration reaches (given in each field's description). `validate` also prints `warning:` lines that do
not fail it, e.g. when a canary step's replayed traffic (`requests_per_s` x `bake_s` x the step's share) is
below `promote.guards.min_invocations`, so the guards could not judge that step.

This page is generated from the model and the scorer registry by `tools/gen_config_docs.py`; do not edit it
by hand.

## A complete example (the default pipeline)

```yaml
{example}```

## Fields
"""

SCORERS_INTRO = """
## Built-in scorers

`evaluate.scorers` lists scorers as `name` + `args`. The names below are built in
(`agent_release.steps.scorers`); an `args` key a scorer does not take is an error. `cost` gets
`evaluate.prices` as `prices`, and `llm_judge` gets the fields of `evaluate.judge`, unless `args` sets them;
a configured `judge` adds `llm_judge` when the list does not name it. Any other name must be an import path
`pkg.module:factory`: the factory is called with `args` and returns an MLflow `Scorer` or a function
`(inputs, outputs, expectations) -> float | None` (`validate` refuses one that cannot take those three,
and one named like a field the gate reads from each row: `error`, `latency_s`, `cost`, `input_tokens`,
`output_tokens`, `retries`).
The module is imported as Python imports any module: from an installed package or a directory on
`PYTHONPATH`. The directory of `pipeline.yaml` is not searched, so for a module beside it run
`PYTHONPATH=<that directory> agent-release validate` (and `run`; `PYTHONPATH=.` from inside it), as the
error for such a module says; a module that exits or raises while it is imported is reported as a config
error naming it. docs/adopting.md walks through a project with scorers and tools of its own.

A scorer that raises on a case does not lose the row, and its missing score is not taken for "not
applicable" (None). The same holds for a scorer that returns NaN or infinity, one whose feedback takes the
name of another scorer's score, and one that runs past MLflow's scorer timeout (a user's function gets
MLflow's default, 300 s, as a user's `@scorer` does). The row names the error under `scorer_errors` (in the per-case table, as an MLflow
artifact and in `state.db`), the trace keeps MLflow's `SCORER_ERROR` feedback with the traceback, the variant
counts its scorer errors (the `scorer_errors` metric, the report), and a gate left without enough scored
pairs says how many rows the scorer raised on and what it raised.

Each variant's aggregate of a score is its mean with a 95% CI clustered by the cluster key. For a built-in
score the interval stops at the values the score can take: 0 to 1 for the rates and shares, 0 upwards for
`latency`, `tokens` and `cost` (with few clusters the t interval around a rate near 0 or 1 would otherwise
pass them). A user scorer's interval is not cut: its range is not known.

`tool_trajectory` modes: `exact`, the same sequence of tool names; `in_order`, the expected names in order,
extra calls allowed; `subset`, every expected tool called at least once, in any order.

| name | args | what it scores |
|---|---|---|
"""


def _type_of(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " | ".join(_type_of(p, defs) for p in prop["anyOf"])
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    t = prop.get("type", "any")
    if t == "array":
        return f"list[{_type_of(prop.get('items', {}), defs)}]"
    if t == "object" and "additionalProperties" in prop and isinstance(prop["additionalProperties"], dict):
        return f"map[str, {_type_of(prop['additionalProperties'], defs)}]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null"}.get(t, t)


def _refs(prop: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if "$ref" in prop:
        out.append(prop["$ref"].rsplit("/", 1)[-1])
    for key in ("anyOf", "allOf", "oneOf"):
        for p in prop.get(key, []):
            out += _refs(p)
    for key in ("items", "additionalProperties"):
        if isinstance(prop.get(key), dict):
            out += _refs(prop[key])
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _model_classes(root: type) -> dict[str, type]:
    """Every pydantic model reachable from ``root``'s fields, by class name (the JSON Schema $defs names)."""
    import typing

    from pydantic import BaseModel

    found: dict[str, type] = {}

    def walk(tp: object) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ in found:
                return
            found[tp.__name__] = tp
            for field in tp.model_fields.values():
                walk(field.annotation)
        for arg in typing.get_args(tp):
            walk(arg)

    walk(root)
    return found


def _default_of(cls: type | None, key: str) -> str | None:
    """The effective default of a field as JSON (default_factory included), or None if unknown."""
    from pydantic import BaseModel

    if cls is None:
        return None
    field = cls.model_fields.get(key)  # type: ignore[attr-defined]
    if field is None or field.default_factory is None:
        return None
    value = field.default_factory()
    if isinstance(value, BaseModel):
        return f"{type(value).__name__} defaults"
    if isinstance(value, list | tuple):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    return json.dumps(value, sort_keys=True)


def _arg_type(tp: Any) -> str:
    """A scorer argument's annotation in the page's notation (Literal values quoted, None as null)."""
    import types
    import typing

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_arg_type(a) for a in args)
    if tp is type(None):
        return "null"
    if origin is not None and args and getattr(origin, "__name__", "") in ("Mapping", "dict"):
        return f"map[{_arg_type(args[0])}, {_arg_type(args[1])}]"
    return getattr(tp, "__name__", str(tp))


def _arg_default(value: Any, module: Any) -> str:
    """The default as JSON, or the name of the module constant it is (long texts such as a rubric)."""
    for name, constant in vars(module).items():
        if name.isupper() and isinstance(value, str) and constant is value:
            return f"`{module.__name__.removeprefix('agent_release.')}.{name}`"
    return json.dumps(value)


def render_scorers() -> str:
    """The table of built-in scorers: name, arguments (type, default) and the factory's summary."""
    import inspect

    from agent_release.steps import scorers

    rows = [SCORERS_INTRO]
    for name in scorers.registered_scorers():
        factory = scorers._REGISTRY[name]
        args = []
        for param in inspect.signature(factory, eval_str=True).parameters.values():
            if param.default is inspect.Parameter.empty:
                default = "required"
            else:
                default = f"default {_arg_default(param.default, scorers)}"
            args.append(f"`{param.name}` ({_arg_type(param.annotation)}, {default})")
        summary = (inspect.getdoc(factory) or "").split("\n\n")[0].replace("``", "`")
        rows.append(f"| `{name}` | {_cell('; '.join(args) or 'none')} | {_cell(summary)} |\n")
    return "".join(rows)


def render() -> str:
    """The markdown reference for the current config model."""
    from agent_release.pipelines.config import PipelineConfig

    classes = _model_classes(PipelineConfig)

    schema = PipelineConfig.model_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    example = (ROOT / "pipeline.yaml").read_text(encoding="utf-8")
    parts = [INTRO.format(example=example)]
    queue: list[tuple[str, dict[str, Any]]] = [("PipelineConfig", schema)]
    seen: set[str] = set()
    while queue:
        title, model = queue.pop(0)
        cls = classes.get(title)
        parts.append(f"\n### {title}{' (top level)' if title == 'PipelineConfig' else ''}\n")
        if model.get("description"):
            parts.append(model["description"].strip().split("\n\n")[0].replace("\n", " ") + "\n")
        parts.append("\n| key | type | default | description |\n|---|---|---|---|\n")
        required = set(model.get("required", []))
        for key, prop in model.get("properties", {}).items():
            if key in required:
                default = "required"
            elif "default" in prop:
                default = json.dumps(prop["default"], sort_keys=True)
            else:
                default = _default_of(cls, key) or "(see type)"
            parts.append(
                f"| `{key}` | {_cell(_type_of(prop, defs))} | {_cell(default)} | "
                f"{_cell(prop.get('description', ''))} |\n"
            )
            for ref in _refs(prop):
                if ref not in seen and ref in defs and "properties" in defs[ref]:
                    seen.add(ref)
                    queue.append((ref, defs[ref]))
    parts.append(render_scorers())
    return "".join(parts)


def main() -> int:
    """Write docs/pipeline-yaml.md (or, with --check, exit 1 when it is stale)."""
    text = render()
    if "--check" in sys.argv:
        return 0 if OUT.read_text(encoding="utf-8") == text else 1
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
