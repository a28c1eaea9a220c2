"""`mnist-kit archive`: what each mode packs into the .mar, the checks before packing, and what it refuses."""

import io
import json
import zipfile

import numpy as np
import onnx
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import TINY_INT8_DROP

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.packaging import archive
from mnist_kit.training import mnist


def manifest(mar) -> dict:
    with zipfile.ZipFile(mar) as z:
        return json.loads(z.read("MAR-INF/MANIFEST.json"))


def test_default_archive_carries_the_state_dict_and_every_checked_serving_form(model_store):
    model = manifest(model_store / "mnist.mar")["model"]
    assert model["modelName"] == "mnist"
    assert model["modelVersion"] == "1.0"
    assert model["handler"] == "mnist_handler.py"
    assert model["serializedFile"] == "mnist_sd.pt" and "modelFile" not in model
    assert model["configFile"] == "model-config.yaml"
    with zipfile.ZipFile(model_store / "mnist.mar") as z:
        forms = json.loads(z.read(C.FORMS_FILE))
    assert set(forms["forms"]) == set(C.SERVING_FORMS)
    assert all(forms["float_accuracy"] - f["accuracy"] <= TINY_INT8_DROP for f in forms["forms"].values())
    assert forms["max_accuracy_drop"] == TINY_INT8_DROP


def test_the_int8_form_is_onnx_with_int8_weights_and_the_fp32_form_onnx_without(model_store, tmp_path):
    with zipfile.ZipFile(model_store / "mnist.mar") as z:
        files = {name: onnx.load_from_string(z.read(name)) for name in ("int8.onnx", "fp32.onnx")}

    def types(model):
        return {onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}

    assert "INT8" in types(files["int8.onnx"]) and {"QuantizeLinear", "DequantizeLinear"} <= {
        node.op_type for node in files["int8.onnx"].graph.node
    }
    assert "INT8" not in types(files["fp32.onnx"]) and "FLOAT" in types(files["fp32.onnx"])


def test_the_check_sample_holds_labelled_test_images_and_what_the_float_model_read(model_store, data_dir):
    with zipfile.ZipFile(model_store / "mnist.mar") as z:
        check = json.loads(z.read(C.FORMS_FILE))["check"]
        sample = np.load(io.BytesIO(z.read(check["file"])))
    images, labels = mnist.load(data_dir, "test", download=False)
    assert sample["images"].shape == (C.CHECK_IMAGES, 28, 28) and sample["images"].dtype == np.uint8
    first = int(np.flatnonzero((images.numpy() == sample["images"][0]).all(axis=(1, 2)))[0])
    assert labels[first] == sample["labels"][0]
    assert C.CHECK_IMAGES * 0.9 < check["float_correct"] <= C.CHECK_IMAGES


def test_archive_packs_the_worker_package_and_constants_beside_the_handler(model_store):
    names = set(zipfile.ZipFile(model_store / "mnist.mar").namelist())
    assert {
        "mnist_handler.py",
        "mnist_model.py",
        "mnist_kit/worker/preprocess.py",
        "mnist_kit/worker/serving_forms.py",
        "mnist_kit/worker/eager_forms.py",
        "mnist_kit/constants.py",
        "mnist_sd.pt",
        "int8.onnx",
        "fp32.onnx",
        C.CHECK_FILE,
        C.FORMS_FILE,
        "model-config.yaml",
    } <= names


def test_eager_mode_packs_the_state_dict_and_model_file_as_the_tutorial_does(tiny_checkpoint, tmp_path):
    model = manifest(archive.build(tiny_checkpoint, tmp_path, mode="eager"))["model"]
    assert model["modelFile"] == "mnist_model.py" and model["serializedFile"] == "mnist_sd.pt"


def test_the_onnx_form_matches_the_float_model_to_1e_5(tiny_checkpoint, tmp_path, data_dir):
    from mnist_kit.packaging import optimize
    from mnist_kit.worker.serving_forms import OnnxForm

    mar = archive.build(tiny_checkpoint, tmp_path, mode="onnx")
    with zipfile.ZipFile(mar) as z:
        assert set(json.loads(z.read(C.FORMS_FILE))["forms"]) == {"onnx-fp32"}
        z.extract("fp32.onnx", tmp_path)
    onnx_form, eager = OnnxForm(str(tmp_path / "fp32.onnx")), optimize.float_form(optimize.load_float(tiny_checkpoint))
    images, _ = mnist.load(data_dir, "test", download=False)
    for i in range(0, len(images), 1000):
        x = mnist.normalize_tensor(images[i : i + 1000]).numpy()
        assert np.allclose(np.exp(onnx_form(x)), np.exp(eager(x)), atol=1e-5)


def test_archive_model_config_sets_batching_and_leaves_the_form_to_the_serving_cpu(model_store):
    with zipfile.ZipFile(model_store / "mnist.mar") as z:
        config = yaml.safe_load(z.read("model-config.yaml"))
    assert config["batchSize"] > 1 and config["maxBatchDelay"] > 0
    assert config["handler"]["serving_form"] == "auto"


def test_int8_mode_packs_the_onnx_int8_form_alone_beside_the_state_dict(tiny_checkpoint, tmp_path):
    mar = archive.build(tiny_checkpoint, tmp_path, mode="int8", max_accuracy_drop=TINY_INT8_DROP)
    assert manifest(mar)["model"]["serializedFile"] == "mnist_sd.pt"
    with zipfile.ZipFile(mar) as z:
        assert set(json.loads(z.read(C.FORMS_FILE))["forms"]) == {"onnx-int8"}
        assert "fp32.onnx" not in z.namelist()


def test_int8_mode_refuses_a_form_below_the_allowed_drop(tiny_checkpoint, tmp_path):
    with pytest.raises(archive.ArchiveError, match=r"onnx-int8 loses .* points .* use --mode onnx or eager"):
        archive.build(tiny_checkpoint, tmp_path, mode="int8", max_accuracy_drop=-1)
    assert not (tmp_path / "mnist.mar").exists()


def test_archive_refuses_to_overwrite_without_force(tiny_checkpoint, tmp_path):
    archive.build(tiny_checkpoint, tmp_path, mode="eager")
    before = (tmp_path / "mnist.mar").stat().st_mtime_ns
    with pytest.raises(archive.ArchiveError, match="already exists: pass --force"):
        archive.build(tiny_checkpoint, tmp_path, mode="eager")
    assert (tmp_path / "mnist.mar").stat().st_mtime_ns == before
    archive.build(tiny_checkpoint, tmp_path, force=True, mode="eager")


def test_other_versions_get_their_own_file(tiny_checkpoint, tmp_path):
    path = archive.build(tiny_checkpoint, tmp_path, version="2.0", mode="eager")
    assert path.name == "mnist-2.0.mar"
    assert manifest(path)["model"]["modelVersion"] == "2.0"


def test_weights_that_do_not_fit_the_model_are_refused_before_packing(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    with pytest.raises(archive.ArchiveError, match="does not fit MnistClassificationNet"):
        archive.build(bad, tmp_path / "store")
    assert not (tmp_path / "store" / "mnist.mar").exists()


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(archive.ArchiveError, match="not a readable PyTorch state_dict"):
        archive.build(bad, tmp_path)


def test_archive_command_without_a_checkpoint_says_to_train_first(tmp_path):
    result = CliRunner().invoke(
        cli, ["archive", "--serialized-file", str(tmp_path / "none.pt"), "--export-path", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "not found: train a model first (mnist-kit train)" in result.output


def test_the_default_archive_without_the_mnist_files_says_what_to_do(tiny_checkpoint, tmp_path):
    with pytest.raises(archive.ArchiveError, match="--mode auto calibrates and verifies on MNIST.*--mode eager"):
        archive.build(tiny_checkpoint, tmp_path, data_dir=tmp_path / "nothing")
