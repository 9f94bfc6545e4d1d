"""The Snakemake report (`snakemake --report report.html`, workflow/rules/report.smk): every figure of
every rule is marked for it with a caption that renders, and on a tiny run the report embeds every
figure and table the run made."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
REPORT_DIR = REPO / "workflow" / "report"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "results", "data", ".snakemake", "logs", "__pycache__",
                                     ".pytest_cache", ".ruff_cache", ".import_linter_cache", "*.egg-info")


def render_caption(path: Path) -> str:
    """A caption as Snakemake renders it (Jinja2, then reStructuredText to HTML), with any docutils
    warning turned into an error: a broken caption would otherwise show its error in the report."""
    from docutils.core import publish_parts
    from jinja2 import Environment, StrictUndefined

    class Job:  # what a caption may read: the job's wildcards and config
        wildcards = {"dataset": "digits", "model": "mlp", "corruption": "0.8", "seed": "0", "variant": "standard"}
        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

    text = Environment(undefined=StrictUndefined).from_string(path.read_text()).render(snakemake=Job)
    return publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})["body"]


def test_every_caption_renders():
    captions = sorted(REPORT_DIR.rglob("*.rst"))
    assert len(captions) > 40
    for path in captions:
        assert len(re.sub(r"<[^>]+>", "", render_caption(path)).split()) >= 15, f"{path} says too little"


def test_every_registered_figure_has_a_caption():
    """Each figure a family can draw (its registry) has its caption file, also those the default
    config does not draw (the rule files name the caption by the figure's name)."""
    from pipeline.arithmetic.figures import FIGURES as ARITHMETIC_FIGURES
    from pipeline.dynamics.figures import FIGURES as DYNAMICS_FIGURES
    from pipeline.images.plots import FIGURES as IMAGE_FIGURES
    from pipeline.workflow import (
        ABLATION_FIGURE,
        ANISOTROPY_FIGURE,
        DYNAMICS_CORRUPTION_FIGURES,
        SGD_NOISE_EPOCHS_FIGURE,
    )

    wanted = [f"images/{name}" for name in IMAGE_FIGURES]
    wanted += [f"dynamics/{name}" for name in [*DYNAMICS_FIGURES, ABLATION_FIGURE, *DYNAMICS_CORRUPTION_FIGURES,
                                              SGD_NOISE_EPOCHS_FIGURE, ANISOTROPY_FIGURE]]
    wanted += [f"arithmetic/{'sweep' if name.startswith('vs_') else name}" for name in ARITHMETIC_FIGURES]
    wanted += [f"labels/{name}" for name in ("pr_curves", "detection_epochs", "suspects", "repair")]
    missing = [name for name in wanted if not (REPORT_DIR / f"{name}.rst").is_file()]
    assert not missing, f"figures without a caption in workflow/report/: {missing}"


PARSE_SCRIPT = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.io import get_flag_value, is_flagged
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

snakefile, workdir, configfile = map(Path, sys.argv[1:4])
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(snakefile=snakefile, workdir=workdir, storage_settings=StorageSettings(),
                            config_settings=ConfigSettings(configfiles=[configfile]),
                            resource_settings=ResourceSettings(cores=1))._workflow
    rows = []
    for rule in workflow.rules:
        for f in rule.output:
            flag = get_flag_value(f, "report") if is_flagged(f, "report") else None
            rows.append({"rule": rule.name, "file": str(f),
                         "caption": flag and flag.caption and flag.caption.get_path_or_uri(secret_free=True),
                         "category": flag and flag.category})
print("OUTPUTS=" + json.dumps(rows))
"""


def test_every_figure_output_of_every_rule_is_in_the_report(tmp_path):
    """Every rule's figure output (the default config: every family it runs, the rule files as
    parsed) is marked report() with a caption that exists and a category (so a new rule file's
    figures cannot leave the report unnoticed)."""
    config = tmp_path / "config.yaml"
    shutil.copy(REPO / "config" / "config.yaml", config)
    proc = subprocess.run([sys.executable, "-c", PARSE_SCRIPT, str(REPO / "Snakefile"), str(tmp_path), str(config)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(proc.stdout.split("OUTPUTS=", 1)[1])
    figures = [r for r in rows if r["file"].endswith(FIGURE_SUFFIXES)]
    assert {r["rule"] for r in figures} >= {"plots", "arithmetic_figures", "dynamics_anisotropy"}
    unmarked = [r for r in figures if not r["caption"] or not r["category"]]
    assert not unmarked, f"figure outputs without report(caption=..., category=...): {unmarked}"
    missing = sorted({r["caption"] for r in figures if not Path(r["caption"]).is_file()})
    assert not missing, f"captions named by the rules that do not exist: {missing}"
    views = [r for r in rows if r["rule"] == "report_tables"]
    assert views and all(r["category"] == "Tables" for r in views)


def embedded_results(report: Path) -> dict[str, dict]:
    """The results the report holds: path -> its record (data URI, caption, category ...), from the
    JSON the report's page is built from (``var results = {...};``)."""
    html = report.read_text()
    match = re.search(r'<script id="results">\s*var results = (\{.*?\});\s*</script>', html, re.S)
    assert match, "no results in the report"
    return json.loads(match.group(1))


def decoded(record: dict) -> bytes:
    header, _, data = record["data_uri"].partition(",")
    assert header.startswith("data:") and header.endswith(";base64"), header[:100]
    return base64.b64decode(data)


@pytest.mark.slow
def test_the_report_embeds_every_figure_and_table_of_a_tiny_run(tmp_path, snakemake, tiny_config):
    """The documented commands, as typed, in a copy of the repository whose config/config.yaml is
    the tiny config: `snakemake --cores 2`, then `snakemake --report report.html`."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=COPY_IGNORE, symlinks=True)
    # one run (80 % corruption) keeps it short; the plots job draws the same figures for one run
    (repo / "config" / "config.yaml").write_text(yaml.safe_dump({**tiny_config, "corruptions": [0.8]}))
    snakemake("--cores", "2", cwd=repo)
    snakemake("--report", "report.html", cwd=repo)

    results = embedded_results(repo / "report.html")
    figures = sorted(p.relative_to(repo).as_posix() for p in (repo / "results" / "plots").rglob("*.png"))
    assert figures and set(figures) >= {"results/plots/digits/mlp/masc_dynamics.png",
                                        "results/plots/digits/mlp/training.png"}
    for figure in figures:
        assert figure in results, f"{figure} is not in the report"
        record = results[figure]
        assert decoded(record) == (repo / figure).read_bytes(), f"{figure}: the embedded image is not the file"
        assert record["mime_type"] == "image/png"
        caption = re.sub(r"<[^>]+>", "", record["caption"])
        assert "mlp on digits" in caption, caption  # the wildcards rendered into it
        assert record["job_properties"]["rule"] == "plots"

    tables = sorted((repo / "results" / "tables").glob("*.parquet"))
    assert {t.stem for t in tables} >= {"probes", "train_log", "benchmarks"}
    import pandas as pd

    for table in tables:
        view = f"results/report/tables/{table.stem}.html"
        assert view in results, f"{table.name} is not in the report"
        page = decoded(results[view]).decode()
        rows = len(pd.read_parquet(table))
        assert f"{table.name}</h2>" in page and f": {rows} rows" in page, page[:500]
        assert page.count("<tr>") == min(rows, 2000)  # every row, up to the cut (the header row is styled)
    # nothing else is in it
    assert set(results) == set(figures) | {f"results/report/tables/{t.stem}.html" for t in tables}

    categories = json.loads(re.search(r"var categories = (\{.*?\});", (repo / "report.html").read_text(),
                                      re.S).group(1))
    assert set(categories) == {"Images", "Tables"} and set(categories["Images"]) == {"digits / mlp"}
    # the description names the pipeline and holds the run's config
    description = json.loads(re.search(r'var workflow_desc = (".*?");\s*</script>',
                                       (repo / "report.html").read_text(), re.S).group(1))
    text = re.sub(r"<[^>]+>", "", description)
    assert "Latent generalization during memorization" in text
    assert "&quot;train_subset&quot;: 300" in text and "&quot;max_epochs&quot;: 4" in text
