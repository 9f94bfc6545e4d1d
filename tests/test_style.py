"""The ecosystem's linters and formatters hold: ruff (configured in pyproject.toml) over the Python
code, snakefmt over the Snakefile and the rule files. Both come with the ``test`` extras."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """The tool next to this interpreter (the venv's), else on PATH; skip the test if neither."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (it comes with the test extras: pip install -e '.[test]')")
    return found


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)


def test_ruff():
    run([tool("ruff"), "check", "--no-fix", "src", "tests", "benchmarks"])


def test_snakefmt():
    run([tool("snakefmt"), "--check", "--diff", "Snakefile", "workflow/rules"])
