"""The arithmetic family's stages (issue 10): one function per ``python -m pipeline arithmetic-*``
command (and workflow rule, ``workflow/rules/arithmetic.smk``).

Each function's signature is where its command line is declared (:mod:`pipeline.__main__` builds the
options from it; a ``dict`` parameter ``settings`` is ``--settings-json``); its docstring's first line
is the command's help. Heavy imports (torch, the training code) are inside the functions that need
them: ``arithmetic-tables`` and ``arithmetic-figures`` import no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.tables import provenance, read_parquet_metadata


def arithmetic_cell(settings: dict, out_dir: str | Path) -> None:
    """Train and analyse one cell of the arithmetic grid (pipeline.arithmetic.run_cell).

    ``settings`` is the cell as JSON, e.g. ``{"P": 31, "width": 257, "alpha": 0.8}`` (grid values and
    the section's common settings); missing keys take the schema's defaults
    (:func:`pipeline.arithmetic.cell.cell_settings`)."""
    import pandas as pd

    from pipeline.arithmetic.cell import cell_path, run_cell

    paths = run_cell(settings, out_dir)
    res = pd.read_parquet(paths["results"])
    last = res[(res["epoch"] == res["epoch"].max()) & (res["score"] == "none") & (res["split"] == "test")]
    acc = last.set_index("network")["accuracy"]
    print(f"{cell_path(settings)}: test accuracy raw {acc.get('raw', float('nan')):.3f}, "
          f"G {acc.get('G', float('nan')):.3f}, R {acc.get('R', float('nan')):.3f}")


def arithmetic_tables(indexes: list[str | Path], /, results: str | Path, neurons: str | Path,
                      log: str | Path, probes: str | Path | None = None) -> None:
    """Gather the arithmetic cells (their index.json files) into their tables.

    Each cell is named by its index.json, the done marker; the tables are validated against their
    schemas and sorted by their keys. ``probes``: also the cells' MASC / VeLPIC rows on the hidden
    layer, in the pipeline's probe-result schema."""
    from pipeline.arithmetic.grid import read_cell_index
    from pipeline.arithmetic.paths import FILES
    from pipeline.arithmetic.tables import LOG, NEURONS, RESULTS
    from pipeline.core.tables import RESULTS as PROBE_RESULTS
    from pipeline.core.tables import gather_tables, write_table

    for index in indexes:  # a done marker that does not read as one stops here, naming the cell
        read_cell_index(index)
    folders = [Path(p).parent for p in indexes]
    meta = {"sources": json.dumps([str(f) for f in folders])}
    gathered = [("results", results, RESULTS), ("neurons", neurons, NEURONS), ("train_log", log, LOG)]
    if probes is not None:
        gathered.append(("probes", probes, PROBE_RESULTS))
    for name, out, schema in gathered:
        # every cell table read and checked (a damaged one is named, with the remedy), then validated
        # as one table and sorted by its keys
        table = gather_tables([f / FILES[name] for f in folders], schema)
        write_table(table, out, schema, {**read_parquet_metadata(folders[0] / FILES[name]), **meta})
    print(f"{len(folders)} arithmetic cells -> {results}, {neurons}, {log}" + (f", {probes}" if probes else ""))


def arithmetic_memorization(out: str | Path, settings: dict | None = None, data_root: str = "data") -> None:
    """The memorization-order check on digits (3-layer MLP, full batch, label noise).

    ``settings``: the config's ``arithmetic.memorization`` (:mod:`pipeline.arithmetic.memorization`)."""
    from pipeline.arithmetic.memorization import memorization_table
    from pipeline.arithmetic.tables import MEMORIZATION
    from pipeline.core.tables import write_table

    settings = settings or {}
    table = memorization_table(settings, root=data_root)
    write_table(table, out, MEMORIZATION, provenance({"arithmetic": {"memorization": settings}}))
    print(f"memorization order: {len(table)} rows -> {out}")


def arithmetic_figures(figure: list[str], outputs: list[str | Path], results: str | Path,
                       neurons: str | Path, log: str | Path, memorization: str | Path | None = None,
                       dpi: int = 120) -> list[Path]:
    """Draw the arithmetic figures from the tables (one --outputs path per --figure)."""
    from pipeline.arithmetic.figures import draw, read_tables

    tables = read_tables(results=results, neurons=neurons, log=log, memorization=memorization)
    return draw(list(figure), list(outputs), tables, dpi=dpi)


def arithmetic_transformer(out: str | Path, settings: dict | None = None) -> None:
    """The transformer on noisy modular arithmetic, before and after FF of its unembedding.

    ``settings``: the config's ``arithmetic.transformer`` (:mod:`pipeline.arithmetic.transformer`);
    what it leaves out takes the schema's default."""
    from dataclasses import asdict

    from pipeline.arithmetic.transformer import TRANSFORMER, TransformerSettings, before_after, transformer_table
    from pipeline.core.tables import write_table

    settings = settings or {}
    resolved = asdict(TransformerSettings.from_config(settings))  # refuses bad settings before training
    table = transformer_table(settings, echo=lambda line: print(line, flush=True))
    write_table(table, out, TRANSFORMER, provenance({"arithmetic": {"transformer": resolved}}))
    print(f"accuracy before (raw) and after (ff) frequency filtration -> {out}\n"
          f"{before_after(table).round(4).to_string()}")
