"""The files of one arithmetic cell's folder (torch-free: the ``arithmetic-tables`` job reads them
without importing the training code of :mod:`pipeline.arithmetic.cell`)."""

FILES = {"labels": "labels.npz", "train_log": "train_log.parquet", "results": "arithmetic.parquet",
         "neurons": "arithmetic_neurons.parquet", "probes": "probes.parquet", "index": "index.json"}
