"""Transfer experiments: what the probes know, put back into the model.

* :mod:`pipeline.images.transfer.editing` -- weight editing (section 8): pre-softmax weights := VeLPIC
  class vectors.
* :mod:`pipeline.images.transfer.intervention` -- the same edit during training (section 9): training
  plus an end-of-epoch hook.
* :mod:`pipeline.images.transfer.relabel` -- relabel the training set with MASC and retrain (the MASC paper).

The workflow side (which runs and tables they add) is in :mod:`pipeline.workflow`.
"""
