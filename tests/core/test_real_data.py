"""The papers' phenomenon on real data: the CNN on real Fashion-MNIST (Debian's dataset-fashion-mnist)
at 80 % label corruption, through the whole workflow (config/fashion-mnist.yaml, ~5 min on 2 cores).

Asserted, as in the papers: the model's test accuracy rises to a peak and then falls far below it
as the model memorizes the shuffled labels, while MASC and VeLPIC on its best layer keep a test
accuracy well above the model's own at the end.

Where the data set is not installed the test skips, saying so; under CI (``CI=true``, where
``.ci/run`` installs the package) it fails instead, so a missing install cannot pass silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        message = f"real Fashion-MNIST not installed ({FASHION_MNIST}): apt-get install dataset-fashion-mnist"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from conftest import Snakemake

    workdir = tmp_path_factory.mktemp("fashion")
    # targets before --configfile, which takes every following word as a file
    result = Snakemake()("results/tables/probes.parquet", "results/tables/train_log.parquet",
                         "--cores", "2", "--configfile", REPO / "config/fashion-mnist.yaml",
                         workdir=workdir, timeout=1800)
    return workdir, result


def test_the_cnn_memorizes_and_its_layers_keep_what_its_output_lost(real_run):
    workdir, _ = real_run
    log = pd.read_parquet(workdir / "results/tables/train_log.parquet")
    table = pd.read_parquet(workdir / "results/tables/probes.parquet")
    assert set(log.dataset) == {"fashion_mnist"} and set(log.corruption) == {0.8}
    peak, final = log.test_acc.max(), log.test_acc.iloc[-1]
    final_epoch = int(log.epoch.iloc[-1])
    assert log.train_acc_corrupted.iloc[-1] > 0.6, "the model did not memorize the corrupted labels"
    assert peak > 0.5 and final < peak - 0.15, (peak, final)

    test = table[(table.split == "test") & (table.epoch == final_epoch)]
    model = test[test.probe == "model"].accuracy.item()
    assert model == pytest.approx(final)
    best = {probe: test[test.probe == probe].accuracy.max() for probe in ("masc", "velpic")}
    print(f"fashion_mnist cnn c0.8: test accuracy peak {peak:.3f}, final {final:.3f} (epoch {final_epoch}); "
          f"best layer MASC {best['masc']:.3f}, VeLPIC {best['velpic']:.3f}")
    for probe, accuracy in best.items():
        assert accuracy > model + 0.15, (probe, accuracy, model)
