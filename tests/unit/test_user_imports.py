"""Import paths a user names in pipeline.yaml (scorers, toolsets): every failure is one line naming them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent_release.agents.builder import load_toolset
from agent_release.agents.user_imports import UserImportError, import_user_object


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("scriptish", "fine"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_a_missing_attribute_names_the_module_and_the_attribute(module_dir: Path) -> None:
    (module_dir / "fine.py").write_text("import sys\nprint('imported', file=sys.stderr)\nvalue = 3\n")
    assert import_user_object("scorer", "fine:value") == 3
    with pytest.raises(UserImportError) as raised:
        import_user_object("scorer", "fine:other")
    assert str(raised.value) == "scorer 'fine:other' cannot be imported: module 'fine' has no 'other'"


def test_what_a_module_prints_on_import_is_passed_on_when_it_imports(
    module_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (module_dir / "fine.py").write_text("import sys\nprint('imported', file=sys.stderr)\nvalue = 3\n")
    import_user_object("scorer", "fine:value")
    assert capsys.readouterr().err == "imported\n"


def test_a_toolset_module_that_exits_on_import_is_one_line_naming_the_toolset(
    module_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same guard as for scorers: argparse at import made the command exit 2 with the module's usage text.
    (module_dir / "scriptish.py").write_text(
        "import argparse\nargparse.ArgumentParser().parse_args(['--x'])\n"
    )
    with pytest.raises(UserImportError) as raised:
        load_toolset("scriptish:tools", module_dir)
    assert str(raised.value) == (
        "toolset 'scriptish:tools' cannot be imported: module 'scriptish' exited on import (exit code 2)"
    )
    assert capsys.readouterr().err == ""


def test_a_toolset_factory_that_exits_is_one_line_naming_the_toolset(
    module_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Guarded at import only: a factory calling sys.exit(0) made `validate`, `run` and `compile` exit 0 with
    # nothing said and nothing done; argparse in it printed its usage text as agent-release's.
    (module_dir / "scriptish.py").write_text(
        "import argparse, sys\n"
        "def quits(data_dir):\n    sys.exit(0)\n"
        "def parses(data_dir):\n    argparse.ArgumentParser().parse_args(['--x'])\n"
    )
    for attr, code in (("quits", 0), ("parses", 2)):
        with pytest.raises(UserImportError) as raised:
            load_toolset(f"scriptish:{attr}", module_dir)
        assert str(raised.value) == (
            f"toolset 'scriptish:{attr}' cannot be built: its factory exited (exit code {code})"
        )
    assert capsys.readouterr().err == ""
