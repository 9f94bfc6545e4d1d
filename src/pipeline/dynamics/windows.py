"""Consistency windows compared like with like (torch-free: the tables and figures jobs use it).

A window ``[T1, T2]`` of point-wise consistency (:func:`pipeline.dynamics.consistency.window_consistency`)
keeps the deep part at ``T2`` and averages over the shallow epochs between ``T1`` and ``T2`` that the
run saved. Two runs' consistency distributions are comparable only over the *same* window: the same
epoch span and the same number of checkpoints. A window naming ``final`` resolves per run, and a run
that stops early (``train.target_train_accuracy``) ends it elsewhere -- e.g. ``[0, final]`` held 3
checkpoints ([0, 5]) in the clean digits run and about 9 in the noisy ones (issue 16). Such windows are
refused wherever runs are compared (the Welch tests, the distributions drawn side by side):
:func:`check_equal_windows` names the runs and their windows.

* :func:`window_label` -- ``"[T1, T2] (n checkpoints)"`` for titles and messages.
* :func:`resolve_window` -- a configured ``[T1, T2]`` (``final`` allowed) at a run's final epoch.
* :func:`run_windows` -- the windows each run computed: ``(T1, T2)`` with its checkpoint count.
* :func:`check_equal_windows` -- raise unless every run of a comparison computed the same windows
  with the same numbers of checkpoints.
* :func:`select_window` -- the point-wise rows of one configured window, per run.
* :func:`figure_options` -- ``dynamics.figures`` with its windows resolved from ``dynamics.windows``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from pipeline.core.tables import RUN_KEY_COLUMNS

__all__ = ["RUN_COLUMNS", "window_label", "resolve_window", "run_windows", "check_equal_windows",
           "select_window", "run_final_epochs", "UnequalWindowsError", "figure_options"]

#: the run-key columns (every dynamics table starts with them)
RUN_COLUMNS = list(RUN_KEY_COLUMNS)


class UnequalWindowsError(ValueError):
    """Runs compared over consistency windows of different span or checkpoint count."""


def _epoch(value, final: int) -> int:
    return int(final) if value == "final" else int(value)


def resolve_window(window: Sequence, final: int) -> tuple[int, int]:
    """``(T1, T2)`` of a configured ``[T1, T2]`` (either end may be ``final``) for a run whose last
    epoch is ``final``."""
    if len(window) != 2:
        raise ValueError(f"a window is [T1, T2], got {list(window)!r}")
    return _epoch(window[0], final), _epoch(window[1], final)


def window_label(t1: int, t2: int, n_epochs: int | None = None) -> str:
    """``[T1, T2]`` in epoch order with the number of checkpoints it averages over."""
    lo, hi = sorted((int(t1), int(t2)))
    n = "" if n_epochs is None else f" ({int(n_epochs)} checkpoint{'s' if n_epochs != 1 else ''})"
    return f"[{lo}, {hi}]{n}"


def run_windows(point: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, depth, split, reference, window): ``window_start``, ``deep_epoch``,
    ``n_epochs`` (checkpoints averaged over) and ``span`` (``|T2 - T1|``)."""
    cols = RUN_COLUMNS + ["depth", "split", "reference", "window_start", "deep_epoch", "n_epochs"]
    w = point[cols].drop_duplicates().reset_index(drop=True)
    w["span"] = (w["deep_epoch"] - w["window_start"]).abs()
    return w


def check_equal_windows(point: pd.DataFrame, *, across: Sequence[str] = ("corruption", "seed")) -> None:
    """Raise :class:`UnequalWindowsError` unless the runs that differ only in ``across`` computed the
    same windows ``(T1, T2)`` with the same number of checkpoints each (the comparisons of the
    family -- Welch tests across seeds, distributions of clean against noisy runs -- are over
    these runs)."""
    if point.empty:
        return
    w = run_windows(point)
    group = [c for c in RUN_COLUMNS + ["depth", "split", "reference"] if c not in across]
    problems = []
    for key, g in w.groupby(group, dropna=False):
        per_run = {}
        for run, r in g.groupby(list(across), dropna=False):
            per_run[run] = sorted((int(a), int(b), int(n)) for a, b, n in
                                  zip(r["window_start"], r["deep_epoch"], r["n_epochs"], strict=True))
        if len({tuple(v) for v in per_run.values()}) > 1:
            desc = "; ".join(f"{dict(zip(across, run if isinstance(run, tuple) else (run,), strict=True))}: "
                             + ", ".join(f"Cons over {window_label(a, b, n)} deep at {b}" for a, b, n in v)
                             for run, v in per_run.items())
            problems.append(f"{dict(zip(group, key, strict=True))} -> {desc}")
    if problems:
        raise UnequalWindowsError(
            "point-wise consistency windows differ between runs that are compared (different epoch "
            "spans or numbers of checkpoints are not like with like): " + " | ".join(problems[:4])
            + (" ..." if len(problems) > 4 else "")
            + ". A window ending at `final` resolves per run and runs stopped by "
              "train.target_train_accuracy end at different epochs: name epochs every run saves in "
              "dynamics.windows (e.g. [0, 4]), or train every run to max_epochs "
              "(target_train_accuracy: 1.0) with train.checkpoints.windows covering the window")


def run_final_epochs(composite: pd.DataFrame | None, point: pd.DataFrame | None = None) -> dict[tuple, int]:
    """Each run's last epoch as the tables know it: the largest deep or shallow epoch of its
    composites and windows (the grid holds every window's ends, and ``final`` is a saved checkpoint)."""
    parts = []
    if composite is not None and not composite.empty:
        parts += [composite[RUN_COLUMNS + ["deep_epoch"]].rename(columns={"deep_epoch": "epoch"}),
                  composite[RUN_COLUMNS + ["shallow_epoch"]].rename(columns={"shallow_epoch": "epoch"})]
    if point is not None and not point.empty:
        parts.append(point[RUN_COLUMNS + ["deep_epoch"]].rename(columns={"deep_epoch": "epoch"}))
    e = pd.concat(parts, ignore_index=True) if parts else None
    if e is None or e.empty:
        return {}
    return {tuple(k): int(v) for k, v in e.groupby(RUN_COLUMNS, dropna=False)["epoch"].max().items()}


def select_window(point: pd.DataFrame, window: Sequence, finals: dict[tuple, int]) -> pd.DataFrame:
    """The rows of the configured ``window`` ([T1, T2], ``final`` allowed) in every run, with that
    run's final epoch from ``finals`` (:func:`run_final_epochs`). A run without the window gives no
    rows."""
    if point.empty:
        return point
    keep = []
    for run, g in point.groupby(RUN_COLUMNS, dropna=False):
        final = finals.get(tuple(run))
        if final is None:
            continue
        t1, t2 = resolve_window(window, final)
        keep.append(g[(g["window_start"] == t1) & (g["deep_epoch"] == t2)])
    return pd.concat(keep, ignore_index=True) if keep else point.iloc[0:0]


def _is_transfer(window: Sequence) -> bool:
    """``T1 > T2`` (the deep part earlier than the shallow parts); ``final`` counts as the latest."""
    a, b = (float("inf") if v == "final" else int(v) for v in window)
    return a > b


def figure_options(config: Mapping) -> dict:
    """``dynamics.figures`` with ``memory_window`` / ``transfer_window`` resolved: a named window
    must be one of the computed windows (``dynamics.windows``, else ``train.checkpoints.windows``);
    null picks the first memory (``T1 <= T2``) / transferability (``T1 > T2``) window there."""
    from pipeline.core.config import ConfigError

    section = config["dynamics"]
    windows = section.get("windows")
    if windows is None:
        windows = (config.get("train", {}).get("checkpoints", {}) or {}).get("windows") or []
    windows = [list(w) for w in windows]
    out = dict(section.get("figures") or {})
    for key, transfer in (("memory_window", False), ("transfer_window", True)):
        named = out.get(key)
        if named is None:
            out[key] = next((w for w in windows if _is_transfer(w) == transfer), None)
            continue
        named = list(named)
        if _is_transfer(named) != transfer:
            raise ConfigError(f"dynamics.figures.{key} {named}: a {'transferability' if transfer else 'memory'} "
                              f"window has T1 {'>' if transfer else '<='} T2")
        if named not in windows:
            raise ConfigError(f"dynamics.figures.{key} {named} is not a computed window; add it to "
                              f"dynamics.windows (now {windows})")
        out[key] = named
    return out
