"""The config's ``arithmetic`` section as a grid of cells, their paths and the figures it draws.

Imported by ``workflow/rules/arithmetic.smk`` (so: no torch, pandas or matplotlib here).

* :data:`GRID_KEYS` are the keys the section lists (one list each); the grid is their product,
  plus one product per entry of ``extra_grids`` (an entry overrides some of the lists, e.g.
  ``{alpha: [1.0], noise_mode: [uniform]}`` for the all-random control). Every other key of
  :data:`CELL_SETTINGS` is one value for every cell. ``num_threads`` is not a cell setting: it is
  the rule's ``threads`` (results do not depend on it), so changing it reruns no cell.
* :data:`CELL_PATTERN` is a cell's folder under ``results/``; one path per distinct set of grid
  values (:func:`check_cells` refuses two cells that would share a folder).
* :func:`figure_names` lists the figures the tables of the grid hold (what the figures job draws).
* :func:`read_cell_index` reads a cell's ``index.json`` (its done marker) and refuses a truncated or
  foreign one; :func:`retrain_cell_advice` is the advice that works for a broken cell.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

#: grid keys in the order of the tables' run keys (after the shared ones)
GRID_KEYS = ("task", "P", "train_fraction", "alpha", "noise_mode", "width", "activation", "tied",
             "optimizer", "weight_decay", "seed")
#: settings that are one value for the whole section and go to every cell (they decide its results,
#: so they are the rule's params; ``num_threads`` is not among them: see the module docstring)
CELL_SETTINGS = ("bias", "init_std", "loss", "lr", "betas", "momentum", "epochs", "batch_size",
                 "log_every", "checkpoint_every", "device", "partition", "ipr_dc", "prune_fractions")
#: what a finished cell's index.json holds (:func:`pipeline.arithmetic.cell.run_cell` writes it last)
INDEX_KEYS = ("settings", "run", "epochs", "checkpoints", "seconds_train", "seconds_total")
#: a cell's folder under results/ (and under logs/); the wildcards are the grid keys
CELL_PATTERN = ("arithmetic/{task}/P{P}/f{train_fraction}/a{alpha}-{noise_mode}/"
                "w{width}-{activation}-{weights}/{optimizer}-wd{weight_decay}/s{seed}")
CELL_WILDCARDS = ("task", "P", "train_fraction", "alpha", "noise_mode", "width", "activation",
                  "weights", "optimizer", "weight_decay", "seed")
WILDCARD_CONSTRAINTS = {
    "task": "[a-z]+", "P": "[0-9]+", "train_fraction": "[0-9.e+-]+", "alpha": "[0-9.e+-]+",
    "noise_mode": "[a-z_]+", "width": "[0-9]+", "activation": "[a-z_]+", "weights": "tied|untied",
    "optimizer": "[a-z]+", "weight_decay": "[0-9.e+-]+", "seed": "[0-9]+",
}
TABLES = {"results": "results/tables/arithmetic.parquet",
          "neurons": "results/tables/arithmetic_neurons.parquet",
          "log": "results/tables/arithmetic_log.parquet",
          "memorization": "results/tables/arithmetic_memorization.parquet",
          "probes": "results/tables/arithmetic_probes.parquet"}
PLOT_DIR = "results/plots/arithmetic"
#: figures drawn whenever the section is enabled
ALWAYS = ("width", "epochs", "ff_bars", "controls", "ipr_hist", "str_hist", "pruning", "phase_scatter")
#: "vs_<key>" figures, drawn when the grid has more than one value of the key
SWEPT = ("weight_decay", "activation", "optimizer", "task")


def cell_wildcards(cell: dict) -> dict[str, str]:
    """The path wildcards of a cell (full settings), as strings."""
    return {
        "task": cell["task"], "P": str(int(cell["P"])), "train_fraction": f"{float(cell['train_fraction']):g}",
        "alpha": f"{float(cell['alpha']):g}", "noise_mode": cell["noise_mode"], "width": str(int(cell["width"])),
        "activation": cell["activation"], "weights": "tied" if cell.get("tied") else "untied",
        "optimizer": cell["optimizer"], "weight_decay": f"{float(cell['weight_decay']):g}",
        "seed": str(int(cell["seed"])),
    }


def cell_path(cell: dict) -> str:
    return CELL_PATTERN.format(**cell_wildcards(cell))


def iter_cells(section: dict) -> list[dict]:
    """Every cell of the section (grid, then each extra grid), as full cell settings; repeated
    cells (an extra grid overlapping the main one) are kept once."""
    common = {k: section[k] for k in CELL_SETTINGS if k in section}
    grids = [{k: section[k] for k in GRID_KEYS}]
    grids += [{**grids[0], **extra} for extra in section.get("extra_grids", [])]
    cells, seen = [], set()
    for grid in grids:
        for values in itertools.product(*(grid[k] for k in GRID_KEYS)):
            cell = {**dict(zip(GRID_KEYS, values, strict=True)), **common}
            key = json.dumps(cell, sort_keys=True)
            if key not in seen:
                seen.add(key)
                cells.append(cell)
    return cells


def check_cells(section: dict) -> list[str]:
    """Problems of the section's grid (empty if none): P even or < 5, two cells in one folder."""
    problems = []
    for P in {p for g in [section, *section.get("extra_grids", [])] for p in g.get("P", [])}:
        if P < 5 or P % 2 == 0:
            problems.append(f"P = {P}: the Fourier analysis needs an odd P >= 5 (a prime such as 23, 31, 97, 113)")
    paths: dict[str, dict] = {}
    for cell in iter_cells(section):
        path = cell_path(cell)
        if path in paths and paths[path] != cell:
            problems.append(f"two cells share the folder {path}: {_grid_values(paths[path])} and "
                            f"{_grid_values(cell)} (values must differ in their 6 significant digits)")
        paths[path] = cell
    return problems


def _grid_values(cell: dict) -> dict:
    return {k: cell[k] for k in GRID_KEYS}


def cells_by_path(section: dict) -> dict[str, dict]:
    return {cell_path(c): c for c in iter_cells(section)}


def swept(section: dict) -> dict[str, list]:
    """Grid keys with more than one value over all cells."""
    cells = iter_cells(section)
    values = {k: list(dict.fromkeys(json.dumps(c[k]) for c in cells)) for k in GRID_KEYS}
    return {k: [json.loads(v) for v in vs] for k, vs in values.items() if len(vs) > 1}


def figure_names(section: dict) -> list[str]:
    """The figures of ``results/plots/arithmetic/`` for this section (none when disabled)."""
    if not section.get("enabled"):
        return []
    names = list(ALWAYS)
    varied = swept(section)
    # weight decay only where one optimizer has several (the paper grid's Adam runs at 0 beside
    # AdamW's 0.1: that is the optimizer comparison, which vs_optimizer draws)
    decays: dict[str, set] = {}
    for c in iter_cells(section):
        decays.setdefault(c["optimizer"], set()).add(float(c["weight_decay"]))
    if not any(len(v) > 1 for v in decays.values()):
        varied.pop("weight_decay", None)
    names += [f"vs_{k}" for k in SWEPT if k in varied]
    cells = iter_cells(section)
    if any(c["tied"] and c["noise_mode"] == "symmetric" for c in cells) and any(
            c["tied"] and c["noise_mode"] != "symmetric" and c["alpha"] > 0 for c in cells):
        names.append("tied")
    if section.get("memorization", {}).get("enabled"):
        names.append("memorization_order")
    return names


# ----------------------------------------------------------------------------- workflow targets

def memorization_enabled(section: dict) -> bool:
    return bool(section.get("enabled") and section.get("memorization", {}).get("enabled"))


def table_paths(section: dict) -> list[str]:
    """The tables the figures read (the memorization table only when that check is on)."""
    tables = [TABLES["results"], TABLES["neurons"], TABLES["log"]]
    return tables + ([TABLES["memorization"]] if memorization_enabled(section) else [])


def plot_paths(section: dict, fmt: str = "png") -> list[str]:
    return [f"{PLOT_DIR}/{name}.{fmt}" for name in figure_names(section)]


def targets(section: dict, fmt: str = "png") -> list[str]:
    """What the workflow's `all` and `arithmetic` rules ask for; nothing unless enabled. The probe
    table (MASC / VeLPIC on the hidden layer) is asked for beside the tables the figures read."""
    if not section.get("enabled"):
        return []
    return table_paths(section) + [TABLES["probes"]] + plot_paths(section, fmt)


def cell_settings_json(cells: dict[str, dict], wildcards) -> str:
    """The settings of the cell named by the rule's wildcards, as JSON (the rule's params)."""
    values = {k: wildcards[k] for k in CELL_WILDCARDS}
    return json.dumps(cells[CELL_PATTERN.format(**values)], sort_keys=True)


def retrain_cell_advice(index: str | Path) -> str:
    """What to do about a broken cell whose done marker is ``index``: force that file. Deleting it
    would not work: Snakemake sees the gathered tables up to date and has nothing to do."""
    return (f"retrain the cell: snakemake --forcerun {index} (with your usual options); it rewrites the "
            "cell's files and reruns what depends on them")


def read_cell_index(index: str | Path) -> dict:
    """A finished cell's ``index.json``; raises :class:`~pipeline.core.errors.ArtifactError` naming the
    file and what to do when it is missing, truncated, not JSON, or lacks :data:`INDEX_KEYS` (a done
    marker that does not read as one says nothing about the cell's tables either)."""
    from pipeline.core.errors import ArtifactError

    index = Path(index)
    advice = retrain_cell_advice(index)
    try:
        content = json.loads(index.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"arithmetic cell index {index} does not exist; {advice}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"arithmetic cell index {index} cannot be read ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); it is truncated or not the cell's; {advice}") from None
    missing = [k for k in INDEX_KEYS if k not in content] if isinstance(content, dict) else list(INDEX_KEYS)
    if missing:
        raise ArtifactError(f"arithmetic cell index {index} lacks {missing}, so it was not written by a "
                            f"finished cell; {advice}")
    return content
