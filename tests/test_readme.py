"""The README's quick start, run as written (the `pip install .` part is the wheel test's)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- quickstart -->\s*```bash\n(.*?)```\s*<!-- /quickstart -->", text, re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("healthetl "):
                    commands.append(part)
    return commands


def test_readme_has_a_quick_start() -> None:
    commands = quickstart_commands()
    assert commands[0] == "healthetl run --config examples/vip-healthtech/healthetl.toml"
    assert len(commands) >= 5


def test_quick_start_runs_as_written(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if k != "HEALTHETL_DATABASE_URL"}
    exe = Path(sys.executable).parent / "healthetl"
    for command in quickstart_commands():
        args = shlex.split(command)
        done = subprocess.run([str(exe), *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        assert done.stdout.strip() or "run" in args, command
    assert (tmp_path / "healthetl.db").exists()


def test_the_sources_sections_hold_valid_project_files(tmp_path: Path) -> None:
    """The `healthetl.toml` shown for object storage and HTTP APIs is what the loader accepts."""
    from healthetl.config import load_project

    text = (REPO / "README.md").read_text(encoding="utf-8")
    for heading in ("## Object storage", "## Paged HTTP JSON APIs"):
        section = text[text.index(heading) :]
        block = re.search(r"```toml\n(.*?)```", section, re.S)
        assert block is not None, heading
        config = tmp_path / "healthetl.toml"
        config.write_text(block.group(1), encoding="utf-8")
        (pipeline,) = load_project(config).pipelines
        assert pipeline.remote or pipeline.api is not None
