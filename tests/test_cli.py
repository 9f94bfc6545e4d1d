"""The command line (`python -m pipeline`): a failure the user can fix is one line on stderr that
names the file and what to do, with exit status 2 and no traceback; anything else keeps its
traceback."""

import errno

import pytest

from pipeline import stages
from pipeline.__main__ import main
from pipeline.core.datasets import DatasetCorruptError, DatasetNotFoundError
from pipeline.core.errors import ArtifactError

RUN = ["--dataset", "digits", "--model", "mlp", "--corruption", "0.8", "--seed", "0"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_missing_configfile(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["validate", "--configfile", str(missing)]) == 2
    err = one_line_error(capsys)
    assert str(missing) in err and "does not exist" in err


def test_configfile_with_a_yaml_error(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {max_epochs: 3\n  bad: [\n")
    assert main(["validate", "--configfile", str(broken)]) == 2
    err = one_line_error(capsys)
    assert str(broken) in err and "not valid YAML" in err and "line 2" in err


def test_config_json_that_is_not_json(capsys):
    assert main(["validate", "--config-json", "{train: 3"]) == 2
    err = one_line_error(capsys)
    assert "--config-json" in err and "not valid JSON" in err


def test_config_error_names_the_configfile(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("corruptions: [0.8, 0.8000001]\n")
    assert main(["validate", "--configfile", str(path)]) == 2
    err = one_line_error(capsys)
    assert "'corruptions'" in err and str(path) in err


def test_corrupt_checkpoint_given_to_extract(tmp_path, capsys):
    """Needs the checkpoint loader to raise pipeline.core.errors.ArtifactError on a corrupt file."""
    checkpoint = tmp_path / "checkpoints" / "epoch_0.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"\x00garbage, not a torch checkpoint\xff" * 10)
    rc = main(["extract", *RUN, "--epoch", "0", "--config-json", '{"data": {"train_subset": 100}}',
               "--labels", str(tmp_path / "labels.npz"), "--checkpoint", str(checkpoint),
               "--out", str(tmp_path / "activations" / "epoch_0.h5")])
    assert rc == 2
    err = one_line_error(capsys)
    assert str(checkpoint) in err
    assert not (tmp_path / "activations" / "epoch_0.h5").exists()


@pytest.mark.parametrize("error", [
    ArtifactError("label file results/x/labels.npz is truncated; delete it and rerun"),
    DatasetNotFoundError("dataset mnist is not in data/mnist; set data.download: true or place it there"),
    DatasetCorruptError("data/mnist/train-images-idx3-ubyte is truncated; delete it and rerun",
                        path="data/mnist/train-images-idx3-ubyte"),
])
def test_expected_errors_are_one_line_and_status_2(tmp_path, capsys, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(stages, "labels", fail)
    assert main(["labels", *RUN, "--out", str(tmp_path / "labels.npz")]) == 2
    assert str(error) in one_line_error(capsys)


@pytest.mark.parametrize("with_name", [True, False])
def test_disk_full_names_the_file_and_says_to_free_space(tmp_path, capsys, monkeypatch, with_name):
    out = tmp_path / "labels.npz"

    def fail(*args, **kwargs):
        # libraries (torch.save, h5py) often raise ENOSPC without a file name
        if with_name:
            raise OSError(errno.ENOSPC, "No space left on device", str(out))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stages, "labels", fail)
    assert main(["labels", *RUN, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert str(out) in err and "free space" in err and "rerun" in err


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"),
                                         (errno.EROFS, "read-only file system")])
def test_unwritable_output_names_the_file(tmp_path, capsys, monkeypatch, code, words):
    out = tmp_path / "labels.npz"

    def fail(*args, **kwargs):
        raise OSError(code, "cannot write", str(out))

    monkeypatch.setattr(stages, "labels", fail)
    assert main(["labels", *RUN, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert str(out) in err and words in err and "rerun" in err


@pytest.mark.parametrize("error", [ValueError("a bug"), OSError(errno.EIO, "Input/output error")])
def test_unexpected_errors_keep_their_traceback(tmp_path, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(stages, "labels", fail)
    with pytest.raises(type(error)):
        main(["labels", *RUN, "--out", str(tmp_path / "labels.npz")])
