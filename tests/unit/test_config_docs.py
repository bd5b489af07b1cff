"""docs/pipeline-yaml.md documents every field of the config model, and is regenerated when the model changes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agent_release.pipelines.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "tools" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "pipeline-yaml.md").read_text(encoding="utf-8")
    assert committed == _generator().render(), "run: .venv/bin/python tools/gen_config_docs.py"


def test_every_field_is_documented_with_a_description() -> None:
    schema = PipelineConfig.model_json_schema()
    missing = [
        f"{name}.{key}"
        for name, model in [("PipelineConfig", schema), *schema.get("$defs", {}).items()]
        for key, prop in model.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert not missing, f"fields without a description: {missing}"
    text = (ROOT / "docs" / "pipeline-yaml.md").read_text(encoding="utf-8")
    for name, model in schema.get("$defs", {}).items():
        for key in model.get("properties", {}):
            assert f"`{key}`" in text, f"{name}.{key} is not in docs/pipeline-yaml.md"
