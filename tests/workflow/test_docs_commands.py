"""Every shell command the documentation shows runs, as typed, in a test.

Where commands are collected (so adding a command to a doc tests it, with no list to update):

* README.md and docs/*.md: every fenced block tagged ``bash``, ``sh``, ``shell``, ``zsh`` or
  ``console``. In a block, a line starting with ``$ `` is a command and the lines after it (up to a
  blank line or the next ``$ ``) are the output it must print; in a bash/sh block without prompts
  every line that is not a comment is a command. A trailing ``\\`` continues a command on the next
  line. A command-looking line in an indented (not fenced) code block fails
  :func:`test_no_command_hides_outside_a_fenced_block`: fence it so it is tested.
* config/*.yaml and the Snakefile: the header (the comment lines before the first other line);
  a comment line whose text starts with a command word (``snakemake``, ``python``, ``bash``,
  ``.venv/bin/...``, ``VAR=value ...``) is a command, continued by a trailing ``\\``.

How each command is run. Commands run from a copy of the repository (no ``results/``: what a fresh
clone sees), with the test's interpreter first on PATH (``python`` is the project's venv) and
``.venv`` linked to it. A command line is split at ``&&``, ``||`` and ``;``; each part is handled
by the first rule that fits it, and a part that fits none fails the test (add a rule here):

* ``snakemake ...`` -- a dry run: ``-n`` is inserted right after the word ``snakemake`` and the
  rest runs exactly as typed (a target written after ``--configfile FILE`` is read as one more
  config file and fails here as it does for a user). ``--profile slurm -n`` builds the DAG
  without calling ``sbatch``, so it needs no SLURM.
* ``snakemake ... --report FILE``: a report needs a finished run, which a fresh copy has not
  (tests/workflow/test_report.py makes a tiny one and runs ``snakemake --report report.html`` on
  it); here the rest of the command (``--report FILE`` left out) runs as a dry run.
* ``python -m pipeline validate|plan ...`` and any ``... --help``: run as typed (cheap, no training).
* ``python -m pipeline <other stage> ...`` (they train, extract or fit) and ``python
  benchmarks/<script>.py ...`` (they measure for minutes): ``--help`` of that stage or script is
  run, and every ``--option`` the command types must be one the help lists.
* ``... -m pytest [paths]``: not run (it would run the suite inside the suite); every path it
  names must exist.
* ``python3 -m venv DIR``: not run (it would replace the interpreter running these tests).
* ``pip install -r FILE -e "PATH[extras]"``: not run (network, changes the environment); every
  requirements file must exist and every extra must be declared in PATH's pyproject.toml.
* ``bash SCRIPT ARGS``: not run (device_checks.sh needs a GPU or a minute; tests/workflow/test_device_checks.py
  runs its ``--smoke``); the script must exist and accept every argument in one of its ``case``
  patterns.
* ``lint-imports``: run as typed (seconds; it must keep every contract).
* ``[sudo] apt-get install PKG``: not run (administers the machine); PKG must be what .ci/run installs.

A command shown with output must print every shown line (its exit status is then not checked:
the documented output may be an error message); a command shown without output must exit 0.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGS = {"bash", "sh", "shell", "zsh", "console"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# the first word of a command in a config header, after optional VAR=value assignments
COMMAND_START = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
                           r"(?:snakemake|python3?|pip|bash|sudo|apt-get|lint-imports|\.venv/bin/\S+)(?:\s|$)")
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "results", "data", ".snakemake", "logs", "__pycache__",
                                     ".pytest_cache", ".ruff_cache", ".import_linter_cache", "*.egg-info", ".whl")
TIMEOUT_S = 180


@dataclasses.dataclass(frozen=True)
class Command:
    source: str  # path relative to the repository root
    line: int  # 1-based line where the command starts
    text: str  # the command as typed, continuation lines joined
    expected: tuple[str, ...] = ()  # output lines shown after a `$ ` prompt

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


# --------------------------------------------------------------------------------------------------
# collecting


def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line number, text) pairs with trailing-backslash continuations joined into one command."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1].rstrip())
            continue
        pending = None
        out.append((number, text.strip()))
    if pending is not None:
        out.append(pending)
    return out


def commands_in_markdown(text: str, source: str) -> list[Command]:
    commands: list[Command] = []
    lang: str | None = None
    block: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if fence and lang is None:
            lang = fence.group(2).lower() or "text"
            block = []
            continue
        if fence and lang is not None:
            if lang in SHELL_LANGS:
                commands += _commands_in_block(block, lang, source)
            lang = None
            continue
        if lang is not None:
            block.append((number, line))
    return commands


def _commands_in_block(block: list[tuple[int, str]], lang: str, source: str) -> list[Command]:
    prompted = any(line.lstrip().startswith("$ ") for _, line in block)
    if not prompted:
        if lang == "console":  # output only
            return []
        body = [(n, s) for n, s in block if s.strip() and not s.lstrip().startswith("#")]
        return [Command(source, n, t) for n, t in _join_continuations(body)]
    commands: list[Command] = []
    current: list[tuple[int, str]] = []
    expected: list[str] = []
    continuing = False

    def flush():
        if current:
            (n, t), = _join_continuations(current)
            commands.append(Command(source, n, t, tuple(expected)))

    for number, line in block:
        stripped = line.strip()
        if continuing:
            current.append((number, line))
            continuing = stripped.endswith("\\")
        elif stripped.startswith("$ "):
            flush()
            current, expected = [(number, stripped[2:])], []
            continuing = stripped.endswith("\\")
        elif stripped and current:
            expected.append(stripped)
        elif not stripped:
            flush()
            current, expected = [], []
    flush()
    return commands


def commands_in_header(text: str, source: str) -> list[Command]:
    """Commands in the leading comment lines of a YAML file or the Snakefile."""
    header: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("#"):
            break
        header.append((number, line.lstrip("#").strip()))
    commands: list[Command] = []
    i = 0
    while i < len(header):
        number, body = header[i]
        if COMMAND_START.match(body):
            parts = [(number, body)]
            while parts[-1][1].endswith("\\") and i + 1 < len(header):
                i += 1
                parts.append(header[i])
            (n, t), = _join_continuations(parts)
            commands.append(Command(source, n, t))
        i += 1
    return commands


def documentation_files(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def header_files(root: Path = REPO) -> list[Path]:
    return [*sorted((root / "config").glob("*.yaml")), root / "Snakefile"]


def collect_commands(root: Path = REPO) -> list[Command]:
    commands: list[Command] = []
    for path in documentation_files(root):
        if path.exists():
            commands += commands_in_markdown(path.read_text(), str(path.relative_to(root)))
    for path in header_files(root):
        if path.exists():
            commands += commands_in_header(path.read_text(), str(path.relative_to(root)))
    return commands


# --------------------------------------------------------------------------------------------------
# running


def split_command_line(text: str) -> list[str]:
    """The parts of a command line between top-level `&&`, `||` and `;` (quotes respected)."""
    parts, current, quote, i = [], [], None, 0
    while i < len(text):
        c = text[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            break  # a comment ends the line
        elif text.startswith(("&&", "||"), i) or c == ";":
            parts.append("".join(current))
            current = []
            i += 1 if c == ";" else 2
            continue
        current.append(c)
        i += 1
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


@functools.lru_cache(maxsize=1)
def workdir() -> Path:
    """A copy of the repository without results (what a fresh clone sees), .venv linked to ours."""
    import atexit
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="docs-commands-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tree = root / "repo"
    shutil.copytree(REPO, tree, ignore=COPY_IGNORE, symlinks=True)
    venv = REPO / ".venv" if (REPO / ".venv").exists() else Path(sys.prefix)
    (tree / ".venv").symlink_to(venv, target_is_directory=True)
    return tree


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    return env


@functools.cache
def run_shell(line: str) -> tuple[int, str]:
    """Run one command line with bash in the fresh copy; (exit status, stdout + stderr)."""
    try:
        proc = subprocess.run(["bash", "-c", line], cwd=workdir(), env=_env(), capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {TIMEOUT_S} s"
    return proc.returncode, proc.stdout + proc.stderr


def _words(part: str) -> tuple[list[str], list[str]]:
    """(VAR=value assignments, the command's words) of one part."""
    words = shlex.split(part, comments=True)
    i = 0
    while i < len(words) and ENV_ASSIGN.match(words[i]):
        i += 1
    return words[:i], words[i:]


def _is_python(word: str) -> bool:
    return re.fullmatch(r"(?:\S*/)?python3?(?:\.\d+)?", word) is not None


def _long_options(words: list[str]) -> list[str]:
    return sorted({w.split("=", 1)[0] for w in words if re.fullmatch(r"--[A-Za-z][\w-]*(=.*)?", w)})


def _check_help(assign: list[str], head: list[str], typed: list[str]) -> str | None:
    """`head --help` must succeed and list every --option of the typed words."""
    status, out = run_shell(shlex.join([*assign, *head, "--help"]))
    if status != 0:
        return f"`{shlex.join(head)} --help` exited {status}:\n{out[-2000:]}"
    missing = [o for o in _long_options(typed) if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", out)]
    if missing:
        return f"`{shlex.join(head)}` has no option(s) {missing} (its --help lists none of them)"
    return None


def check_part(part: str) -> tuple[str, str | None]:
    """Handle one part of a command line by the module docstring's rules: (what was done, failure or None)."""
    assign, words = _words(part)
    if not words:
        return "empty", None
    first = os.path.basename(words[0])
    if first == "snakemake":
        if "--report" in words:  # needs a finished run: tests/workflow/test_report.py runs it after one
            part = re.sub(r"(^|\s)--report\s+\S+", "", part, count=1)
        line = re.sub(r"(^|\s)((?:\S*/)?snakemake)(?=\s|$)", r"\1\2 -n", part, count=1)
        status, out = run_shell(line)
        return f"dry run: {line}", None if status == 0 else f"`{line}` exited {status}:\n{out[-3000:]}"
    if first == "lint-imports":
        status, out = run_shell(part)
        return f"run: {part}", None if status == 0 else f"`{part}` exited {status}:\n{out[-3000:]}"
    if first in ("sudo", "apt-get"):
        packages = [w for w in words[words.index("install") + 1:] if not w.startswith("-")] \
            if "install" in words else []
        ci = (REPO / ".ci" / "run").read_text()
        unknown = [p for p in packages if p not in ci]
        return "not run (administers the machine)", \
            None if packages and not unknown else f"apt-get installs {unknown or 'nothing'} that .ci/run does not"
    if first == "bash":
        script = workdir() / words[1]
        if not script.is_file():
            return "bash", f"no script {words[1]}"
        text = script.read_text()
        refused = [a for a in words[2:] if not re.search(rf"(^|[\s(|]){re.escape(a)}[|)]", text, re.M)]
        return "not run (checked its case patterns)", None if not refused else \
            f"{words[1]} accepts no argument(s) {refused}"
    pip_words = words[1:] if first.startswith("pip") else \
        words[3:] if _is_python(words[0]) and words[1:3] == ["-m", "pip"] else None
    if pip_words is not None:
        return "not run (pip)", _check_pip(pip_words)
    if _is_python(first):
        if words[1:3] == ["-m", "venv"]:
            return "not run (would replace the interpreter running these tests)", None
        if words[1:3] == ["-m", "pytest"]:
            paths = [w.split("::")[0] for w in words[3:] if not w.startswith("-")]
            missing = [p for p in paths if not (workdir() / p).exists()]
            return "not run (pytest inside pytest)", None if not missing else f"pytest names missing {missing}"
        if "--help" in words or "-h" in words:
            status, out = run_shell(part)
            return f"run: {part}", None if status == 0 else f"`{part}` exited {status}:\n{out[-3000:]}"
        if words[1:3] == ["-m", "pipeline"]:
            stage = next((w for w in words[3:] if not w.startswith("-")), None)
            if stage in ("validate", "plan"):
                status, out = run_shell(part)
                return f"run: {part}", None if status == 0 else f"`{part}` exited {status}:\n{out[-3000:]}"
            if stage is None:
                return "pipeline", "no stage named"
            return f"--help of stage {stage}", _check_help(assign, words[: words.index(stage) + 1], words)
        if len(words) > 1 and words[1].endswith(".py"):
            return f"--help of {words[1]}", _check_help(assign, words[:2], words)
    return "no rule", f"no rule in tests/workflow/test_docs_commands.py handles `{part}`: add one (see its docstring)"


def _check_pip(words: list[str]) -> str | None:
    if not words or words[0] != "install":
        return f"pip {words} is not an install"
    problems = []
    for i, w in enumerate(words):
        if w == "-r" and not (workdir() / words[i + 1]).is_file():
            problems.append(f"no requirements file {words[i + 1]}")
        if w == "-e":
            match = re.fullmatch(r"(.*?)(?:\[(.*)\])?", words[i + 1])
            project = workdir() / match.group(1)
            declared = tomllib.loads((project / "pyproject.toml").read_text())["project"].get(
                "optional-dependencies", {})
            problems += [f"extra [{e}] is not declared in {project.name}/pyproject.toml"
                         for e in (match.group(2) or "").split(",") if e and e not in declared]
    return "; ".join(problems) or None


def check_command(command: Command) -> list[str]:
    """Failures of one documented command (empty when it works as typed)."""
    failures = []
    parts = split_command_line(command.text)
    if command.expected:
        # shown output: the whole line runs (snakemake as a dry run) and must print it
        line = re.sub(r"(^|\s)((?:\S*/)?snakemake)(?=\s|$)", r"\1\2 -n", command.text, count=1)
        _, out = run_shell(line)
        flat = " ".join(out.split())
        failures += [f"`{line}` did not print: {e}\n--- it printed:\n{out[-3000:]}"
                     for e in command.expected if " ".join(e.split()) not in flat]
        return failures
    for part in parts:
        _, failure = check_part(part)
        if failure:
            failures.append(failure)
    return failures


# --------------------------------------------------------------------------------------------------
# tests

COMMANDS = collect_commands()


@functools.cache
def checked_commands() -> dict[Command, list[str]]:
    """check_command of every collected command, run side by side (each is one process; the
    machine's cores, up to 4, run them at once) so the whole check stays within minutes."""
    from concurrent.futures import ThreadPoolExecutor

    workdir()  # one copy, made before the threads start
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return dict(zip(COMMANDS, pool.map(check_command, COMMANDS), strict=True))


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command_works_as_typed(command):
    failures = checked_commands()[command]
    assert not failures, f"{command.id}: `{command.text}`\n" + "\n".join(failures)


def test_readme_opens_with_setup_and_test_commands():
    readme = [c for c in COMMANDS if c.source == "README.md"]
    assert [c.text for c in readme[:2]] == [
        'python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -e ".[test]" && '
        'PATH="$PWD/.venv/bin:$PATH" snakemake --cores 2',
        ".venv/bin/python -m pytest",
    ]
    # every source holds commands, so a broken extractor cannot pass by finding none
    sources = {c.source for c in COMMANDS}
    for name in ("README.md", "docs/images.md", "docs/probes.md", "docs/dynamics.md", "docs/arithmetic.md",
                 "docs/scale-out.md", "docs/configuration.md", "config/arithmetic-doshi.yaml",
                 "config/fashion-mnist.yaml", "config/paper.yaml", "Snakefile"):
        assert name in sources, f"no command found in {name}"


def test_extraction_reads_prompts_output_continuations_and_headers(tmp_path):
    doc = ("text\n\n```bash\n# a comment\nsnakemake --cores 2 \\\n    --configfile a.yaml   # trailing\n"
           "python -m pipeline plan\n```\n\n```console\n$ snakemake -n --config 'x=1'\n"
           "invalid configuration: x\n\n$ echo ok\n```\n\n```python\nprint('not shell')\n```\n"
           "    snakemake indented\n")
    found = commands_in_markdown(doc, "doc.md")
    assert [(c.line, c.text, c.expected) for c in found] == [
        (5, "snakemake --cores 2 --configfile a.yaml   # trailing", ()),
        (7, "python -m pipeline plan", ()),
        (11, "snakemake -n --config 'x=1'", ("invalid configuration: x",)),
        (14, "echo ok", ()),
    ]
    header = ("# A config.\n#   snakemake --cores 1 \\\n#     --configfile x.yaml\n# Check: python -m x\n"
              "#   PYTHONPATH=src python b.py --n 3   # note\ntrain: {}\n# snakemake after the header\n")
    assert [(c.line, c.text) for c in commands_in_header(header, "c.yaml")] == [
        (2, "snakemake --cores 1 --configfile x.yaml"), (5, "PYTHONPATH=src python b.py --n 3   # note")]
    assert split_command_line('a && PATH="x;y" b || c; d # e && f') == ["a", 'PATH="x;y" b', "c", "d"]


def test_target_after_configfile_fails_and_target_first_works():
    """The README's old arithmetic command: --configfile takes the target as one more config file."""
    old = check_command(Command("old", 1, "snakemake --cores 2 --configfile config/arithmetic-doshi.yaml arithmetic"))
    assert old and "arithmetic" in old[0]
    assert check_command(Command("new", 1, "snakemake arithmetic --cores 2 --configfile "
                                           "config/arithmetic-doshi.yaml")) == []


def test_training_stage_is_checked_by_its_options():
    good = Command("x", 1, "python -m pipeline train --configfile config/config.yaml --dataset digits --model mlp "
                           "--corruption 0.8 --seed 0 --labels l.npz --out-dir o")
    assert check_command(good) == []
    bad = check_command(Command("x", 1, "python -m pipeline train --configfile c.yaml --max-epochs 3"))
    assert bad and "--max-epochs" in bad[0]
    assert "no rule" in check_command(Command("x", 1, "make all"))[0]


def test_no_command_hides_outside_a_fenced_block():
    """An indented code block is not collected: commands must be fenced to be tested."""
    for path in documentation_files():
        inside = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FENCE.match(line):
                inside = not inside
                continue
            if not inside and line.startswith("    ") and COMMAND_START.match(line.strip()):
                pytest.fail(f"{path.relative_to(REPO)}:{number}: a command outside a fenced block: {line.strip()}")


def test_readme_is_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
    link = re.compile(r"\]\(([\w./-]+\.(?:md|png|py|yaml|toml|json|sh))(?:#[^)]*)?\)")
    links = link.findall(readme)
    for doc in sorted((REPO / "docs").glob("*.md")):
        links += [str(Path("docs") / target) for target in link.findall(doc.read_text())]
    for target in links:
        if not target.startswith("results/"):  # results/ is what the default run writes
            assert (REPO / target).resolve().exists(), f"broken link {target}"
    images = re.findall(r"!\[[^\]]*\]\((results/plots/[^)]+\.png)\)", readme)
    assert images, "README shows no figure of the default run"
    from pipeline.images.plots import FIGURE_NEEDS

    for image in images:
        assert Path(image).stem in FIGURE_NEEDS, f"{image}: the default run draws no such figure"


def test_every_dotted_pipeline_name_in_the_docs_exists():
    """`pipeline.x.y` names in README and docs resolve (a rename updates the docs or fails here)."""
    missing = []
    for path in documentation_files():
        for name in sorted(set(re.findall(r"`(pipeline(?:\.\w+)+)", path.read_text()))):
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for attr in parts[cut:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    missing.append(f"{path.relative_to(REPO)}: {name}")
                break
    assert not missing, "names that do not exist:\n" + "\n".join(missing)


def test_configuration_reference_is_generated_from_the_schema():
    import runpy

    gen = runpy.run_path(str(REPO / "docs" / "gen_config_reference.py"))
    current = (REPO / "docs" / "configuration.md").read_text()
    assert gen["update"](current) == current, \
        "docs/configuration.md is out of date: run .venv/bin/python docs/gen_config_reference.py"
