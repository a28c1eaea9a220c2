"""Training (training/fit.py, `mnist-kit train`): what it writes, that a seed repeats it, and how it refuses."""

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import ROOT

from mnist_kit.cli import cli
from mnist_kit.training.fit import Recipe, fit


def test_training_writes_the_state_dict_and_its_metrics(tiny_checkpoint):
    metrics = json.loads((tiny_checkpoint.parent / "metrics.json").read_text())
    assert set(metrics) >= {"test_accuracy", "epochs", "seconds", "seed", "versions"}
    assert metrics["test_accuracy"] > 90
    assert set(torch.load(tiny_checkpoint, weights_only=True)) == {
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }


@pytest.mark.integration  # trains, briefly
def test_same_seed_gives_the_same_model_on_cpu(data_dir, tmp_path):
    recipe = Recipe(epochs=1, limit=512, seed=7, device="cpu")
    a = fit(recipe, tmp_path / "a.pt", data_dir=data_dir)
    b = fit(recipe, tmp_path / "b.pt", data_dir=data_dir)
    sd_a, sd_b = (torch.load(tmp_path / f, weights_only=True) for f in ("a.pt", "b.pt"))
    assert a["test_accuracy"] == b["test_accuracy"]
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_train_without_data_exits_3_with_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr("mnist_kit.training.mnist._download", lambda data_dir: None)
    result = CliRunner().invoke(
        cli, ["train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.pt")]
    )
    assert result.exit_code == 3
    assert "Error: MNIST file train-images-idx3-ubyte(.gz) not found" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.pt").exists()


def test_train_refuses_an_existing_checkpoint_before_training(tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr("mnist_kit.training.mnist.load", lambda *args, **kwargs: loaded.append(args))
    out = tmp_path / "m.pt"
    out.write_bytes(b"minutes of training")
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1
    assert result.output == f"Error: {out} already exists: pass --force to overwrite it\n"
    assert loaded == [] and out.read_bytes() == b"minutes of training"


def test_train_with_force_goes_past_an_existing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr("mnist_kit.training.mnist._download", lambda data_dir: None)
    out = tmp_path / "m.pt"
    out.write_bytes(b"old")
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out), "--force"])
    assert (
        result.exit_code == 3 and "MNIST file train-images-idx3-ubyte(.gz) not found" in result.output
    )  # got to the data


@pytest.mark.integration  # trains, briefly
def test_training_reports_progress_through_callbacks(data_dir, tmp_path):
    steps, epochs = [], []
    fit(
        # without outliers: with them, printed digits join the 256 (tests/test_real_world.py trains with them)
        Recipe(epochs=2, limit=256, batch_size=128, outliers=False),
        tmp_path / "m.pt",
        data_dir=data_dir,
        on_step=lambda *a: steps.append(a),
        on_epoch=lambda epoch, loss, accuracy: epochs.append(epoch),
    )
    assert steps == [(1, 1, 2), (1, 2, 2), (2, 1, 2), (2, 2, 2)] and epochs == [1, 2]


def test_python_train_py_is_the_train_command():
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "Usage: python train.py [OPTIONS]" in result.stdout


@pytest.mark.integration  # trains, briefly
def test_train_handwriting_adds_the_letters_and_digits_of_the_trained_fonts_only(data_dir, tmp_path):
    from mnist_kit.training import handwriting

    metrics = fit(Recipe(epochs=1, limit=1200, handwriting=True), tmp_path / "a.pt", data_dir=data_dir)
    plain = fit(Recipe(epochs=1, limit=1200), tmp_path / "b.pt", data_dir=data_dir)
    glyphs = handwriting.load()
    letters = glyphs.select(held_out=False, digits=False)
    assert metrics["handwriting"] == {
        "letters": len(letters.images),
        "digits": round(len(glyphs.select(held_out=False, digits=True).images) * 1200 / 60000),
    }
    assert plain["handwriting"] == {"letters": 0, "digits": 0} and plain["printed_digits"] == metrics["printed_digits"]
