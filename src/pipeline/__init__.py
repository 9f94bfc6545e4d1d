"""Latent generalization during memorization: a Snakemake pipeline's Python package.

Every stage of the workflow is one function in one module here; the Snakemake rules only call them.
"""

__version__ = "0.1.0"
