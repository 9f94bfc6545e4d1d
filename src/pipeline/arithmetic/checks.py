"""The arithmetic section's checks a JSON schema cannot express, run when the config is validated
(:func:`pipeline.config.validate_config`), before any cell trains.

:func:`check_config` raises :class:`~pipeline.core.config.ConfigError` naming the key and what to do
for the first problem of, in order:

* a ``train_fraction``, ``alpha`` or ``weight_decay`` finer than the cell folder that names it (the
  folder, the run keys and the rows hold 6 significant digits, so two values could share a folder
  or a cell could run with a value its name does not show);
* task ``mul`` with a P that is not prime (the multiplicative structure the analysis reads, the
  group of nonzero residues, exists for a prime modulus only);
* a (P, train_fraction) whose seeded split leaves the training or the test set empty (training
  would divide by zero; the analysis needs both);
* the grid's own checks (:func:`pipeline.arithmetic.grid.check_cells`: odd P >= 5, one folder per
  cell).

Torch-free: the config is checked on every workflow invocation. ``device: cuda`` without a GPU is
refused with the other devices, by :func:`pipeline.config.check_devices` (the one resolver, skipped
where the jobs run on other machines).
"""

from __future__ import annotations

from pipeline.arithmetic.data import split_pairs
from pipeline.arithmetic.grid import GRID_KEYS, check_cells, iter_cells
from pipeline.core.config import ConfigError

#: grid keys whose values are written into the cell's folder with ``:g`` (6 significant digits)
FOLDER_FORMATTED = ("train_fraction", "alpha", "weight_decay")


def check_config(config: dict) -> None:
    """Check the config's ``arithmetic`` section (nothing when it is not enabled)."""
    section = config.get("arithmetic", {})
    if not section.get("enabled"):
        return
    grids = _grids(section)
    _check_folder_values(grids)
    _check_mul_prime(grids)
    _check_split_sizes(section)
    problems = check_cells(section)
    if problems:
        raise ConfigError(f"config key 'arithmetic': {problems[0]}")


def _grids(section: dict) -> list[tuple[str, dict]]:
    """(config key prefix, grid) of the main grid and each extra grid (with the lists it inherits)."""
    main = {k: section[k] for k in GRID_KEYS}
    return [("arithmetic", main)] + [(f"arithmetic.extra_grids[{i}]", {**main, **extra})
                                     for i, extra in enumerate(section.get("extra_grids", []))]


def _check_folder_values(grids: list[tuple[str, dict]]) -> None:
    for prefix, grid in grids:
        for key in FOLDER_FORMATTED:
            for value in grid[key]:
                name = f"{float(value):g}"
                if float(name) != float(value):
                    # the cell would run with `value` in a folder (and rows) saying `name`, and
                    # a second value with the same name would share that folder
                    raise ConfigError(
                        f"config key '{prefix}.{key}': {value!r} would run in a cell folder named with {name} "
                        f"(cell folders hold 6 significant digits); write it as {name}")


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def _check_mul_prime(grids: list[tuple[str, dict]]) -> None:
    for prefix, grid in grids:
        if "mul" not in grid["task"]:
            continue
        for P in grid["P"]:
            if not _is_prime(int(P)):
                raise ConfigError(
                    f"config key '{prefix}.P': {P} is not prime, and task mul (in '{prefix}.task') needs "
                    "a prime modulus (the nonzero residues form a group under multiplication only "
                    "mod a prime); use a prime such as 23, 31, 97 or 113, or drop mul from the task list")


def _check_split_sizes(section: dict) -> None:
    seen = set()
    for cell in iter_cells(section):
        # the split does not depend on the noise mode (pipeline.arithmetic.data)
        key = (cell["task"], int(cell["P"]), float(cell["train_fraction"]), int(cell["seed"]))
        if key in seen:
            continue
        seen.add(key)
        task, P, fraction, seed = key
        train, test = split_pairs(P, fraction, seed, task=task)
        for name, pairs in (("training", train), ("test", test)):
            if len(pairs) == 0:
                raise ConfigError(
                    f"config keys 'arithmetic.P' and 'arithmetic.train_fraction': P = {P} with "
                    f"train_fraction = {fraction:g} leaves no {name} pair among the P^2 = {P * P} "
                    f"pairs; {'raise' if name == 'training' else 'lower'} train_fraction or "
                    "raise P")
