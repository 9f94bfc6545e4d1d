"""Names of the image family's run variants: the intervened runs (``intervene-e{E}[-keepopt]``) and
the relabel-and-retrain protocols. Torch-free: the rule files build paths from these.
"""

from __future__ import annotations

import re

from pipeline.core.schedule import checkpoint_schedule, late_interval

INTERVENTION_PATTERN = r"intervene-e[0-9]+(-keepopt)?"


def intervention_variant(icfg: dict) -> str:
    """Run variant of the intervention configured by ``transfer.intervention``."""
    return f"intervene-e{int(icfg['epoch'])}" + ("" if icfg["reset_optimizer"] else "-keepopt")


def is_intervention(variant: str) -> bool:
    return re.fullmatch(INTERVENTION_PATTERN, variant) is not None


def intervention_schedule(config: dict, model: str) -> list[int]:
    """Checkpointed epochs of an intervened run: E (edited), then the schedule up to E+N, and E+N."""
    icfg, ck = config["transfer"]["intervention"], config["train"]["checkpoints"]
    first, last = int(icfg["epoch"]), int(icfg["epoch"]) + int(icfg["extra_epochs"])
    if icfg.get("checkpoint_every"):
        epochs = set(range(first, last + 1, int(icfg["checkpoint_every"])))
    else:
        epochs = set(checkpoint_schedule(last, early_every=ck["early_every"],
                                         early_until=ck["early_until"],
                                         late_every=late_interval(config, model)))
    return sorted(e for e in epochs | {first, last} if first <= e <= last)


#: relabel-and-retrain protocols (``pipeline.images.transfer.relabel`` validates against the same tuple)
RELABEL_PROTOCOLS = ("heldout_true", "heldout_corrupted", "authors_test_split")
