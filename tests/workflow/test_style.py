"""The ecosystem's linters and formatters hold: ruff (configured in pyproject.toml) over the Python
code, snakefmt over the Snakefile and the rule files, and import-linter's contracts (the package's
layering, ``[tool.importlinter]`` in pyproject.toml). All come with the ``test`` extras, and
``.pre-commit-config.yaml`` runs the same three before a commit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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


def test_import_contracts_hold():
    """outer layer -> families -> probes -> core; families independent; no cycles in any package."""
    run([tool("lint-imports")])


@pytest.mark.parametrize("module, imports, broken", [
    # a family importing another family
    ("dynamics/paths.py", "import pipeline.arithmetic.grid", "Families never import each other"),
    # core importing a family (an arrow pointing up)
    ("core/schedule.py", "import pipeline.images.variants", "Layers"),
    # a cycle between two outer modules
    ("config.py", "import pipeline.workflow", "No import cycles"),
])
def test_a_wrong_arrow_breaks_a_contract(tmp_path, module, imports, broken):
    """The contracts are not vacuous: one wrong import in a copy of the package breaks the named one."""
    lint = tool("lint-imports")
    shutil.copytree(REPO / "src" / "pipeline", tmp_path / "src" / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "pipeline" / module
    target.write_text(target.read_text() + f"\n{imports}  # the wrong arrow\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    proc = subprocess.run([lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0, proc.stdout
    broken_section = proc.stdout.split("Broken contracts")[-1]
    assert broken in broken_section, proc.stdout


def test_pre_commit_runs_the_same_checks():
    """The hooks a contributor gets before committing: the same three tools, from this environment."""
    pre_commit = tool("pre-commit")
    if not (REPO / ".git").exists():
        pytest.skip("pre-commit needs a git checkout")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([pre_commit, "run", "--all-files"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for hook in ("ruff", "snakefmt", "import-linter"):
        assert hook in proc.stdout
