import json

import torch
from click.testing import CliRunner

from mnist_kit import training as train
from mnist_kit.cli import cli


def test_training_writes_the_state_dict_and_its_metrics(tiny_checkpoint):
    metrics = json.loads((tiny_checkpoint.parent / "metrics.json").read_text())
    assert set(metrics) >= {"test_accuracy", "epochs", "seconds", "seed", "versions"}
    assert metrics["test_accuracy"] > 90
    assert set(torch.load(tiny_checkpoint, weights_only=True)) == {
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_same_seed_gives_the_same_model_on_cpu(data_dir, tmp_path):
    a = train.fit(data_dir, tmp_path / "a.pt", epochs=1, limit=512, seed=7, device="cpu", progress=False)
    b = train.fit(data_dir, tmp_path / "b.pt", epochs=1, limit=512, seed=7, device="cpu", progress=False)
    sd_a, sd_b = (torch.load(tmp_path / f, weights_only=True) for f in ("a.pt", "b.pt"))
    assert a["test_accuracy"] == b["test_accuracy"]
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_train_without_data_exits_2_with_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr("mnist_kit.data._download", lambda data_dir: None)
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 2
    assert "Error: MNIST file train-images-idx3-ubyte(.gz) not found" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.pt").exists()
