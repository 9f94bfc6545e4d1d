"""The command line (`python -m pipeline`): a failure the user can fix is one line on stderr that
names the file and what to do, with exit status 2 and no traceback; anything else keeps its
traceback. Every stage is one registered function whose signature is its command line, reachable
from the rule files; the light stages import no torch; the workflow validates its config once."""

import ast
import errno
import functools
import inspect
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pipeline.images.stages as images_stages
from pipeline.__main__ import STAGES, build_parser, main, stage_function
from pipeline.core.datasets import DatasetCorruptError, DatasetNotFoundError
from pipeline.core.errors import ArtifactError

RUN = ["--dataset", "digits", "--model", "mlp", "--corruption", "0.8", "--seed", "0"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_missing_configfile(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["validate", "--configfile", str(missing)]) == 2
    err = one_line_error(capsys)
    assert str(missing) in err and "does not exist" in err


def test_configfile_with_a_yaml_error(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {max_epochs: 3\n  bad: [\n")
    assert main(["validate", "--configfile", str(broken)]) == 2
    err = one_line_error(capsys)
    assert str(broken) in err and "not valid YAML" in err and "line 2" in err


def test_config_json_that_is_not_json(capsys):
    assert main(["validate", "--config-json", "{train: 3"]) == 2
    err = one_line_error(capsys)
    assert "--config-json" in err and "not valid JSON" in err


def test_config_error_names_the_configfile(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("corruptions: [0.8, 0.8000001]\n")
    assert main(["validate", "--configfile", str(path)]) == 2
    err = one_line_error(capsys)
    assert "'corruptions'" in err and str(path) in err


def test_corrupt_checkpoint_given_to_extract(tmp_path, capsys):
    """Needs the checkpoint loader to raise pipeline.core.errors.ArtifactError on a corrupt file."""
    checkpoint = tmp_path / "checkpoints" / "epoch_0.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"\x00garbage, not a torch checkpoint\xff" * 10)
    rc = main(["extract", *RUN, "--epoch", "0", "--config-json", '{"data": {"train_subset": 100}}',
               "--labels", str(tmp_path / "labels.npz"), "--checkpoint", str(checkpoint),
               "--out", str(tmp_path / "activations" / "epoch_0.h5")])
    assert rc == 2
    err = one_line_error(capsys)
    assert str(checkpoint) in err
    assert not (tmp_path / "activations" / "epoch_0.h5").exists()


@pytest.mark.parametrize("error", [
    ArtifactError("label file results/x/labels.npz is truncated; delete it and rerun"),
    DatasetNotFoundError("dataset mnist is not in data/mnist; set data.download: true or place it there"),
    DatasetCorruptError("data/mnist/train-images-idx3-ubyte is truncated; delete it and rerun",
                        path="data/mnist/train-images-idx3-ubyte"),
])
def test_expected_errors_are_one_line_and_status_2(tmp_path, capsys, monkeypatch, error):
    @functools.wraps(images_stages.labels)  # the command line is built from its signature
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(images_stages, "labels", fail)
    assert main(["labels", *RUN, "--out", str(tmp_path / "labels.npz")]) == 2
    assert str(error) in one_line_error(capsys)


@pytest.mark.parametrize("with_name", [True, False])
def test_disk_full_names_the_file_and_says_to_free_space(tmp_path, capsys, monkeypatch, with_name):
    out = tmp_path / "labels.npz"

    @functools.wraps(images_stages.labels)  # the command line is built from its signature
    def fail(*args, **kwargs):
        # libraries (torch.save, h5py) often raise ENOSPC without a file name
        if with_name:
            raise OSError(errno.ENOSPC, "No space left on device", str(out))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images_stages, "labels", fail)
    assert main(["labels", *RUN, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert str(out) in err and "free space" in err and "rerun" in err


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"),
                                         (errno.EROFS, "read-only file system")])
def test_unwritable_output_names_the_file(tmp_path, capsys, monkeypatch, code, words):
    out = tmp_path / "labels.npz"

    @functools.wraps(images_stages.labels)  # the command line is built from its signature
    def fail(*args, **kwargs):
        raise OSError(code, "cannot write", str(out))

    monkeypatch.setattr(images_stages, "labels", fail)
    assert main(["labels", *RUN, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert str(out) in err and words in err and "rerun" in err


@pytest.mark.parametrize("error", [ValueError("a bug"), OSError(errno.EIO, "Input/output error")])
def test_unexpected_errors_keep_their_traceback(tmp_path, monkeypatch, error):
    @functools.wraps(images_stages.labels)  # the command line is built from its signature
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(images_stages, "labels", fail)
    with pytest.raises(type(error)):
        main(["labels", *RUN, "--out", str(tmp_path / "labels.npz")])


# ----------------------------------------------------------------------------- the stage registry

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def _parser_of(stage: str):
    """The sub-parser of ``stage`` (its options as argparse actions)."""
    parser = build_parser(stage)
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[stage]


def _options(parser) -> dict[str, object]:
    return {opt: action for action in parser._actions for opt in action.option_strings}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_help_from_its_docstring(stage, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([stage, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    first_line = inspect.getdoc(stage_function(stage)).splitlines()[0]
    assert f"python -m pipeline {stage}" in out
    assert " ".join(first_line.split()) in " ".join(out.split())


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_parameter_of_a_stage_is_an_option(stage):
    parser = _parser_of(stage)
    options = _options(parser)
    positionals = {a.dest for a in parser._actions if not a.option_strings}
    function = stage_function(stage)
    for p in inspect.signature(function).parameters.values():
        if p.name == "config":
            assert {"--configfile", "--config-json"} <= set(options)
        elif p.name == "run":
            assert {"--dataset", "--model", "--corruption", "--seed", "--variant"} <= set(options)
        elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
            assert p.name in positionals
        else:  # --out-dir for out_dir; --settings-json for a dict; --no-model-rows for a flag that is on
            kebab = p.name.replace("_", "-")
            flags = [f for f in (f"--{kebab}", f"--{kebab}-json", f"--no-{kebab}") if f in options]
            assert len(flags) == 1, (stage, p.name, sorted(options))
            action = options[flags[0]]
            assert action.dest == p.name
            if action.nargs != 0:  # not a flag: required exactly when the parameter has no default
                assert action.required == (p.default is inspect.Parameter.empty), (stage, p.name)


def test_the_help_subprocess_of_a_light_stage():
    """`python -m pipeline labels --help`, as a user types it."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", "labels", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--corruption" in proc.stdout and "--out" in proc.stdout


def _rule_blocks(text: str) -> list[str]:
    """The rule (and checkpoint) definitions of a rule file, each as its text."""
    starts = [m.start() for m in re.finditer(r"^[ \t]*(?:rule|checkpoint)\b[^\n]*:[ \t]*$", text, re.M)]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=False)]


def _section(block: str, name: str) -> str:
    """The lines of a rule's ``name:`` section (more indented than the keyword)."""
    m = re.search(rf"^([ \t]*){name}:[ \t]*\n", block, re.M)
    if not m:
        return ""
    indent, lines = len(m.group(1)), []
    for line in block[m.end():].splitlines():
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        lines.append(line)
    return "\n".join(lines)


def _shell(block: str) -> str:
    """The rule's shell command (its adjacent string literals, joined)."""
    return "".join(ast.literal_eval(line.strip()) for line in _section(block, "shell").splitlines()
                   if line.strip())


def _params(block: str) -> dict[str, str]:
    """param name -> the text of its definition."""
    body = textwrap.dedent(_section(block, "params"))
    parts = re.split(r"^(\w+)=", body, flags=re.M)
    return {name: expr for name, expr in zip(parts[1::2], parts[2::2], strict=True)}


def _helper_sources() -> str:
    """Where a param's helper functions live: common.smk and pipeline.workflow."""
    import pipeline.workflow

    return (REPO / "workflow" / "rules" / "common.smk").read_text() + inspect.getsource(pipeline.workflow)


def _expands_to(expr: str, helpers: str) -> list[str]:
    """The options a params expression puts on the command line: the literal ``--options`` in it or
    in the body of a helper function it calls."""
    found = re.findall(r"--[a-z][a-z0-9-]*", expr)
    for name in re.findall(r"\b([a-z_]\w*)\b", expr):
        m = re.search(rf"^def {name}\(.*?(?=^\S)", helpers, re.M | re.S)
        if m:
            found += re.findall(r"--[a-z][a-z0-9-]*", m.group(0))
    return list(dict.fromkeys(found))


def _rule_commands() -> list[tuple[str, str, list[str]]]:
    """(rule file, stage, argv) of every ``python -m pipeline`` call in the rule files, with each
    placeholder replaced by a dummy value, or by the options its params expression writes."""
    helpers = _helper_sources()
    commands = []
    for path in RULE_FILES:
        for block in _rule_blocks(path.read_text()):
            shell = _shell(block)
            if "python -m pipeline" not in shell:
                continue
            params = _params(block)
            command = shell.split("python -m pipeline", 1)[1].split(">", 1)[0].split()
            stage, argv = command[0], []
            for token in command[1:]:
                m = re.fullmatch(r"\{params\.(\w+)(?::q)?\}", token)
                options = _expands_to(params.get(m.group(1), ""), helpers) if m else []
                if options:
                    options_of = _options(_parser_of(stage)) if stage in STAGES else {}
                    for option in options:
                        argv.append(option)
                        if option not in options_of or options_of[option].nargs != 0:
                            argv.append("1")
                else:
                    argv.append("1" if token.startswith("{") else token)
            commands.append((path.name, stage, argv))
    return commands


def test_the_rule_files_call_registered_stages_with_options_they_accept():
    commands = _rule_commands()
    assert len(commands) >= 20, commands  # every family's rules were found
    assert {"labels", "train", "probe", "probe-fused", "aggregate", "dynamics-tables",
            "arithmetic-figures"} <= {stage for _, stage, _ in commands}
    for rule_file, stage, argv in commands:
        assert stage in STAGES, f"{rule_file}: python -m pipeline {stage} is no registered stage"
        parser = _parser_of(stage)
        for token in argv:
            if token.startswith("--"):
                assert token in _options(parser), f"{rule_file}: {stage} has no option {token}"
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{rule_file}: python -m pipeline {stage} {' '.join(argv)} does not parse")


# ----------------------------------------------------------------------------- torch-free light stages

LIGHT_STAGES = ("labels", "arithmetic-tables", "dynamics-tables", "arithmetic-figures", "dynamics-figures",
                "aggregate")


def test_light_stages_import_no_torch():
    """Each light stage's function, and every module it imports when it runs (the imports in its
    body), without torch; in one process, stage after stage, naming the first that loads it."""
    script = textwrap.dedent(f"""
        import ast, importlib, inspect, sys, textwrap
        from pipeline.__main__ import stage_function
        for stage in {list(LIGHT_STAGES)!r}:
            function = stage_function(stage)
            tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        importlib.import_module(alias.name)
                elif isinstance(node, ast.ImportFrom):
                    module = importlib.import_module(node.module)
                    for alias in node.names:  # as `from m import n` does: an attribute, else a submodule
                        if not hasattr(module, alias.name):
                            importlib.import_module(node.module + "." + alias.name)
            if "torch" in sys.modules:
                print("torch imported by", stage)
                sys.exit(1)
        print("no torch")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and "no torch" in proc.stdout, proc.stdout + proc.stderr


def test_the_labels_job_runs_without_torch(tmp_path):
    """The whole `python -m pipeline labels` job on digits, as the rule runs it, loads no torch."""
    out = tmp_path / "labels.npz"
    argv = ["labels", "--config-json", json.dumps({"data": {"train_subset": 300, "test_subset": 150}}),
            *RUN, "--out", str(out)]
    script = ("import runpy, sys\n"
              f"sys.argv = ['pipeline', *{argv!r}]\n"
              "try:\n    runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n"
              "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
              "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "no torch" in proc.stdout, proc.stdout
    import numpy as np

    with np.load(out) as labels:
        assert len(labels["true"]) == 300


# ----------------------------------------------------------------------------- validation per DAG build

COUNT_VALIDATIONS = """
import sys

import snakemake.utils

import pipeline.config
import pipeline.core.config

calls = []
schema_check = pipeline.core.config.apply_schema
snakemake_validate = snakemake.utils.validate


def apply_schema(config):
    calls.append("pipeline schema")
    return schema_check(config)


def validate(*args, **kwargs):
    calls.append("snakemake.utils.validate")
    return snakemake_validate(*args, **kwargs)


pipeline.core.config.apply_schema = pipeline.config.apply_schema = apply_schema
snakemake.utils.validate = validate
from snakemake.cli import main

sys.argv = ["snakemake", *sys.argv[1:]]
try:
    main()
finally:
    print("SCHEMA VALIDATIONS", len(calls), calls, file=sys.stderr)
"""


def test_the_workflow_validates_its_config_once_per_dag_build(tmp_path, tiny_config):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(tiny_config))  # JSON is YAML
    proc = subprocess.run([sys.executable, "-c", COUNT_VALIDATIONS, "-s", str(REPO / "Snakefile"),
                           "--directory", str(tmp_path), "-n", "--quiet", "rules", "--configfile", str(config)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    count = re.search(r"SCHEMA VALIDATIONS (\d+) (.*)", proc.stderr)
    assert count, proc.stderr[-2000:]
    assert int(count.group(1)) == 1, count.group(0)


def test_a_workflow_job_checks_the_schema_of_its_config_not_the_whole_config_again(capsys, monkeypatch):
    """The Snakefile validated the whole config when it built the DAG and marks its jobs
    (CHECKED_BY_WORKFLOW, via shell.prefix): a job then checks its config's schema (an unknown key
    still stops it) but not the cross-section checks (their imports cost 1-2 s per job); a command
    typed by hand checks everything, and so does a job whose config names the user's own datasets or
    models (validation registers them: tests/workflow/test_user_data_workflow.py runs such jobs)."""
    from pipeline.config import CHECKED_BY_WORKFLOW

    bad_setting = json.dumps({"probes": {"settings": [{"name": "masc", "params": {"no_such": 1}}]}})
    monkeypatch.delenv(CHECKED_BY_WORKFLOW, raising=False)
    assert main(["validate", "--config-json", bad_setting]) == 2
    assert "no_such" in one_line_error(capsys)
    monkeypatch.setenv(CHECKED_BY_WORKFLOW, "1")
    from pipeline.__main__ import _config

    parser = build_parser("labels")
    args = parser.parse_args(["labels", "--config-json", bad_setting, *RUN, "--out", "x.npz"])
    assert _config(args)["probes"]["settings"][0]["params"] == {"no_such": 1}
    args = parser.parse_args(["labels", "--config-json", json.dumps({"train": {"max_epoch": 3}}), *RUN,
                              "--out", "x.npz"])
    with pytest.raises(Exception, match=r"unknown config key\(s\) \['max_epoch'\]"):
        _config(args)
    snakefile = (REPO / "workflow/rules/common.smk").read_text()
    assert 'shell.prefix(f"set -euo pipefail; export {CHECKED_BY_WORKFLOW}=1; ")' in snakefile


def test_a_new_family_is_a_folder_with_a_stages_module(tmp_path):
    """Commands are found, not listed: a family folder with a ``stages.py`` adds its commands
    without an edit anywhere else (here: in a copy of the package)."""
    import shutil
    import subprocess
    import sys

    package = tmp_path / "src" / "pipeline"
    shutil.copytree(REPO / "src" / "pipeline", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "newfamily").mkdir()
    (package / "newfamily" / "__init__.py").write_text('"""A family added by the test."""\n')
    (package / "newfamily" / "stages.py").write_text(
        '"""One stage."""\n\nfrom pathlib import Path\n\n\n'
        'def count_lines(source: Path, out: Path) -> None:\n'
        '    """Count the lines of SOURCE into OUT."""\n'
        '    Path(out).write_text(str(len(Path(source).read_text().splitlines())))\n')
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    env = {"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "count-lines", "--source", "in.txt", "--out", "n.txt"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "n.txt").read_text() == "3"
