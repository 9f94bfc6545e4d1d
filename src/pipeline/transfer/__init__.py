"""Transfer experiments: what the probes know, put back into the model.

* :mod:`pipeline.transfer.editing` -- weight editing (section 8): pre-softmax weights := VeLPIC
  class vectors.
* :mod:`pipeline.transfer.intervention` -- the same edit during training (section 9): training
  plus an end-of-epoch hook.
* :mod:`pipeline.transfer.relabel` -- relabel the training set with MASC and retrain (the MASC paper).

The workflow side (which runs and tables they add) is in :mod:`pipeline.workflow`.
"""
