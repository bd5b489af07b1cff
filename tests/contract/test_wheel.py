"""The package builds as a wheel holding each project file once (docs/aws.md installs it in the step image)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_module_and_template_exactly_once(tmp_path: Path) -> None:
    uv = Path(sys.executable).with_name("uv")
    built = subprocess.run(
        [str(uv), "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    # It used to fail with hatchling 1.33 ("A second file is being added to the wheel archive at the same
    # path"): the symlinked packages were included by `packages` and again by a force-include table.
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("agent_release-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    assert not duplicates, duplicates[:5]
    expected = {
        f"agent_release/{path.relative_to(ROOT).as_posix()}"
        for top in ("pipelines", "steps", "agents")
        for path in (ROOT / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert expected - set(names) == set()
