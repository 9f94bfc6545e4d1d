"""The one thread policy: cap torch's and the BLAS libraries' threads for the whole process.

Every stage applies it once, at start (the command line with the ``threads`` Snakemake gives a
rule; :class:`pipeline.core.runtime.RunRuntime` with ``train.num_threads`` when that is set). Without
the BLAS cap two jobs on a 2-core machine each start a BLAS pool per core and MASC / VeLPIC fits
run several times slower than on one thread.

Torch-free on purpose: stages that never touch a model (fit, score, aggregate, plot) must not pay
for importing torch. The environment variables reach libraries loaded later; threadpoolctl caps the
ones already loaded; torch is capped now if it is loaded, else when it is imported (it reads
``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import os
import sys

_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS")
_LIMITERS: list = []  # keeps threadpoolctl's limiters alive for the life of the process


def limit_threads(threads: int | None) -> None:
    """Cap torch and BLAS/OpenMP threads at ``threads`` for this process; ``None``/0 leaves them."""
    if not threads:
        return
    n = int(threads)
    for name in _ENV:
        os.environ[name] = str(n)
    from threadpoolctl import threadpool_limits

    _LIMITERS.append(threadpool_limits(limits=n))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
