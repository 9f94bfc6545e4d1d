"""Your data, your model (issue 17): which training labels are wrong, and what fixing them gains.

Detectors score every training example's given label from cross-fitted probes on a layer's
activations (a probe fitted on the other folds, so it cannot bless its own memorized mistakes) and
from cleanlab on out-of-fold predicted probabilities; repair retrains after relabeling or removing
the flagged examples. This module only re-exports (lazily, PEP 562); see the submodules.
"""

from __future__ import annotations

from pipeline.core.exports import lazy_exports

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    # section 2, detection
    "Detection": "pipeline.labels.detect",
    "CLEANLAB": "pipeline.labels.detect",
    "crossfit_probe": "pipeline.labels.detect",
    "cleanlab_detection": "pipeline.labels.detect",
    "cleanlab_layer": "pipeline.labels.detect",
    "detection_metrics": "pipeline.labels.detect",
    "check_detection_labels": "pipeline.labels.detect",
    "GivenLabels": "pipeline.labels.detect_stage",
    "detection_layers": "pipeline.labels.detect_stage",
    "detect_layers": "pipeline.labels.detect_stage",
    "detect_run": "pipeline.labels.detect_stage",
    "detect_file": "pipeline.labels.detect_stage",
    "read_given_labels": "pipeline.labels.detect_stage",
    "DETECTION": "pipeline.labels.tables",
    "LABEL_SCORES": "pipeline.labels.tables",
    "detection_frame": "pipeline.labels.tables",
    "scores_frame": "pipeline.labels.tables",
    "best_readings": "pipeline.labels.suspects",
    "suspects_frame": "pipeline.labels.suspects",
    "write_suspects": "pipeline.labels.suspects",
    "draw_suspects": "pipeline.labels.suspects",
    "draw_pr_curves": "pipeline.labels.figures",
    "draw_detection_epochs": "pipeline.labels.figures",
    # section 2, cleanlab's network route, and section 3, repair
    "Retrained": "pipeline.labels.retrain",
    "OutOfFold": "pipeline.labels.retrain",
    "NETWORK_LAYER": "pipeline.labels.retrain",
    "train_from_scratch": "pipeline.labels.retrain",
    "predict_proba": "pipeline.labels.retrain",
    "stratified_folds": "pipeline.labels.retrain",
    "out_of_fold_probabilities": "pipeline.labels.retrain",
    "cleanlab_network_run": "pipeline.labels.retrain",
    "truth_of": "pipeline.labels.retrain",
    "REPAIR": "pipeline.labels.repair",
    "REPAIR_COLUMNS": "pipeline.labels.repair",
    "MODES": "pipeline.labels.repair",
    "SELECTIONS": "pipeline.labels.repair",
    "Choice": "pipeline.labels.repair",
    "choose_detectors": "pipeline.labels.repair",
    "read_detections": "pipeline.labels.repair",
    "read_choice_scores": "pipeline.labels.repair",
    "repaired_labels": "pipeline.labels.repair",
    "repair_run": "pipeline.labels.repair",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
