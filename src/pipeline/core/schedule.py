"""Which epochs a run saves (the checkpoint schedule) and which saved checkpoints are extracted and
probed. Torch-free: the Snakefile builds the DAG from these.
"""

from __future__ import annotations

from collections.abc import Iterable


def checkpoint_schedule(max_epochs: int, *, early_every: int = 2, early_until: int = 20,
                        late_every: int = 5) -> list[int]:
    """Epochs at which a checkpoint is saved if training gets there (the final epoch is added on stop).

    >>> checkpoint_schedule(30)
    [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30]
    """
    epochs = set(range(0, min(early_until, max_epochs) + 1, early_every))
    if early_until <= max_epochs:
        epochs.update(range(early_until, max_epochs + 1, late_every))
    epochs.add(0)
    return sorted(e for e in epochs if e <= max_epochs)


def late_interval(config: dict, model: str) -> int:
    """``train.checkpoints.late_every``, or the model's published interval (AlexNet 10, others 5)."""
    late = config["train"]["checkpoints"]["late_every"]
    if late:
        return int(late)
    from pipeline.core.models import MODELS  # torch; only when the config leaves it to the model

    return MODELS[model].late_checkpoint_interval


def checkpoint_windows(config: dict) -> list[tuple[int, int]]:
    """``train.checkpoints.windows``: dense windows ``[t_a, t_b]`` (inclusive) saved at every epoch.

    Absent or ``[]``: none (the schedule is the papers'). Each window needs ``0 <= t_a <= t_b``.
    """
    windows = config["train"]["checkpoints"].get("windows") or []
    out = []
    for i, window in enumerate(windows):
        if (not isinstance(window, (list, tuple)) or len(window) != 2
                or not all(isinstance(t, int) and not isinstance(t, bool) for t in window)):
            raise ValueError(f"config key 'train.checkpoints.windows.{i}' is {window!r}; "
                             "expected a pair of epochs [t_a, t_b]")
        a, b = window
        if not 0 <= a <= b:
            raise ValueError(f"config key 'train.checkpoints.windows.{i}' is {list(window)}; "
                             "expected 0 <= t_a <= t_b")
        out.append((a, b))
    return out


def window_epochs(windows: Iterable[tuple[int, int]], max_epochs: int) -> list[int]:
    """Every epoch of the windows, up to ``max_epochs``, sorted."""
    return sorted({e for a, b in windows for e in range(a, min(b, max_epochs) + 1)})


def schedule_for(config: dict, model: str) -> list[int]:
    """The checkpoint schedule of a standard run: :func:`checkpoint_schedule` with the config's
    intervals, plus every epoch of the dense windows (:func:`checkpoint_windows`)."""
    ck = config["train"]["checkpoints"]
    max_epochs = config["train"]["max_epochs"]
    epochs = checkpoint_schedule(max_epochs, early_every=ck["early_every"],
                                 early_until=ck["early_until"], late_every=late_interval(config, model))
    dense = window_epochs(checkpoint_windows(config), max_epochs)
    return sorted(set(epochs).union(dense)) if dense else epochs


def probed_epochs(saved: Iterable[int], config: dict) -> list[int]:
    """The checkpoint epochs whose activations are extracted and probed.

    ``saved`` are the epochs a run saved (``checkpoints/index.json``). ``storage.every = k`` keeps
    every k-th of them by position, always with the first and the last; ``storage.epochs`` (a
    list) then keeps only the listed epochs.
    """
    saved = sorted(int(e) for e in saved)
    storage = config.get("storage", {})
    every = int(storage.get("every", 1) or 1)
    if every > 1 and saved:
        kept = saved[::every]
        if saved[-1] not in kept:
            kept.append(saved[-1])
        saved = kept
    wanted = storage.get("epochs")
    if wanted is not None:
        wanted = {int(e) for e in wanted}
        saved = [e for e in saved if e in wanted]
    return saved


def probe_block(epoch: int, config: dict) -> int:
    """Block of a checkpoint: epochs in the same window of ``cluster.probe_block_epochs``."""
    return int(epoch) // int(config.get("cluster", {}).get("probe_block_epochs", 50))


def probe_blocks(epochs: Iterable[int], config: dict) -> dict[int, list[int]]:
    """Epochs by block, blocks in order."""
    blocks: dict[int, list[int]] = {}
    for epoch in sorted(epochs):
        blocks.setdefault(probe_block(epoch, config), []).append(int(epoch))
    return blocks
