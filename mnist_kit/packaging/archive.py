"""Archiving: check a state_dict against the model, then pack it with torch-model-archiver into a .mar, with the serving
forms and the drift baseline (what the model was trained on, as the runtime measures what it is sent)."""

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

import mnist_model
from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.packaging import mar
from mnist_kit.worker import drift, eager_forms, preprocess

HANDLER = importlib.util.find_spec("mnist_handler").origin
PACKAGE = Path(C.__file__).parent
# The serving forms each --mode packs (--mode eager: the state_dict and mnist_model.py, as the tutorial).
MODES = {"auto": C.SERVING_FORMS, "int8": ("onnx-int8",), "onnx": ("onnx-fp32",)}


class ArchiveError(KitError):
    """The archive cannot be built; the message says why."""


def mar_filename(model_name: str, version: str) -> str:
    """`mnist.mar` for the default version, `mnist-2.0.mar` for others, so versions share a model store."""
    return f"{model_name}.mar" if version == C.MODEL_VERSION else f"{model_name}-{version}.mar"


def model_config(
    batch_size: int = C.BATCH_SIZE, max_batch_delay_ms: int = C.MAX_BATCH_DELAY_MS, serving_form: str = "auto"
) -> str:
    """The archive's model-config.yaml: TorchServe's batching settings for this model.

    Batching waits at most 1 ms for a lone request (TorchServe's smallest delay: 0 means its default of
    100 ms), and under load the queue fills batches of up to 16 by itself. Workers are left to the server,
    which starts one per core; the handler runs each on one intra-op thread. The handler's serving_form is
    "auto" (timed on the serving CPU) or the form to serve whatever the timings.
    """
    return (
        f"batchSize: {batch_size}\nmaxBatchDelay: {max_batch_delay_ms}\nresponseTimeout: {C.RESPONSE_TIMEOUT_S}\n"
        f"handler:\n  serving_form: {serving_form}\n"
    )


def check_state_dict(path) -> None:
    """Load the weights into MnistClassificationNet now, so a bad file fails here and not in a server worker."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArchiveError(f"{path} not found: train a model first (mnist-kit train)") from None
    except Exception as e:
        raise ArchiveError(f"{path} is not a readable PyTorch state_dict: {e}") from None
    if not isinstance(state_dict, dict):
        raise ArchiveError(f"{path} holds a {type(state_dict).__name__}, not a state_dict")
    try:
        mnist_model.MnistClassificationNet().load_state_dict(state_dict)
    except RuntimeError as e:
        raise ArchiveError(f"{path} does not fit MnistClassificationNet: {e}") from None


def build(
    serialized_file=C.CHECKPOINT,
    export_path=C.MODEL_STORE,
    model_name=C.MODEL_NAME,
    *,
    version=C.MODEL_VERSION,
    force=False,
    mode="auto",
    data_dir=None,
    batch_size=C.BATCH_SIZE,
    max_batch_delay_ms=C.MAX_BATCH_DELAY_MS,
    serving_form="auto",
    max_accuracy_drop=C.MAX_ACCURACY_DROP,
    log=lambda message: None,
) -> Path:
    """Write `export_path/<model_name>[-<version>].mar` and return its path; never leaves a partial file.

    mode: "auto" packs the state_dict with every serving form (C.SERVING_FORMS) that keeps the float model's test
    accuracy within max_accuracy_drop points: the worker times those it can load on its CPU at start and serves the
    fastest (mnist_kit.worker.serving_forms). "int8" packs the ONNX int8 form alone (refused if it loses more),
    "onnx" the ONNX fp32 form alone, both beside the state_dict (explanations, and PyTorch where onnxruntime is
    missing);
    "eager" packs the state_dict with mnist_model.py (the tutorial's eager mode).
    """
    check_state_dict(serialized_file)
    export_path = Path(export_path)
    target = export_path / mar_filename(model_name, version)
    if target.exists() and not force:
        raise ArchiveError(f"{target} already exists: pass --force to overwrite it")
    export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=export_path, prefix=".archive-") as tmp:
        extra_files, model_file = [_worker_package(tmp)], None
        if mode == "eager":
            model_file = mnist_model.__file__
        else:
            forms = _serving_forms(serialized_file, data_dir, tmp, mode=mode, log=log, max_drop=max_accuracy_drop)
            extra_files += [mnist_model.__file__, *forms]
        extra_files += _drift_baseline(serialized_file, data_dir, tmp, log=log)
        built = mar.package(
            model_name=model_name,
            version=version,
            handler=HANDLER,
            export_path=tmp,
            serialized_file=serialized_file,
            model_file=model_file,
            extra_files=extra_files,
            config=model_config(batch_size, max_batch_delay_ms, serving_form),
        )
        os.replace(built, target)
    return target


def _worker_package(tmp: str) -> str:
    """A folder holding mnist_kit/ with only what the handler imports beyond torch, onnxruntime, PIL, numpy and ts:
    the package's empty __init__, its constants and worker/. torch-model-archiver copies a folder's contents to
    the archive root, so the worker imports them as mnist_kit.* with or without mnist-kit installed."""
    stage = Path(tmp, "worker-files", "mnist_kit")
    shutil.copytree(PACKAGE / "worker", stage / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "constants.py"):
        shutil.copy(PACKAGE / name, stage / name)
    return str(stage.parent)


def _drift_baseline(serialized_file, data_dir, tmp: str, *, log) -> list[str]:
    """C.DRIFT_BASELINE_FILE (worker/drift.py): the statistics of C.DRIFT_BASELINE_IMAGES MNIST training images, drawn
    at random (the file's order is not: runs of it differ), as the runtime measures what it answers: through the
    serving preprocessing, read by the float model. [] where the MNIST files are missing (only --mode eager gets here
    without them): the archive serves without drift figures."""
    from mnist_kit.training import mnist

    try:
        images, _ = mnist.load(data_dir or mnist.default_data_dir(), "train", download=False)
    except mnist.DataError as e:
        log(f"no drift baseline: the MNIST training images are missing ({e})")
        return []
    pick = np.sort(np.random.default_rng(C.SEED).choice(len(images), C.DRIFT_BASELINE_IMAGES, replace=False))
    pixels = [preprocess.read_array(image).pixels for image in images[torch.from_numpy(pick)].numpy()]
    model = eager_forms.EagerForm(mnist_model.from_state_dict(serialized_file))
    probabilities = np.concatenate(
        [
            np.exp(model(preprocess.model_input(pixels[i : i + 500])), dtype=np.float64).round(6)
            for i in range(0, len(pixels), 500)
        ]
    )
    rows = drift.statistics(np.stack(pixels), probabilities.argmax(1), probabilities.max(1))
    path = Path(tmp, C.DRIFT_BASELINE_FILE)
    path.write_text(drift.Baseline.of(rows).to_json())
    return [str(path)]


def _test_data(data_dir, mode: str):
    from mnist_kit.training import mnist

    try:
        train_images, _ = mnist.load(data_dir or mnist.default_data_dir(), "train")
        test_images, test_labels = mnist.load(data_dir or mnist.default_data_dir(), "test")
    except mnist.DataError as e:
        raise ArchiveError(
            f"--mode {mode} calibrates and verifies on MNIST, which is missing ({e}); pass --data-dir, or --mode eager"
        ) from None
    return train_images[: C.CALIBRATION_IMAGES], test_images, test_labels


def _serving_forms(serialized_file, data_dir, tmp: str, *, mode: str, log, max_drop: float) -> list[str]:
    """Write the forms of `mode`, the check sample and forms.json into tmp, and return their paths. Each form is
    kept only within max_drop points of the float model's test accuracy: --mode auto leaves one out, the others
    fail."""
    from mnist_kit.packaging import optimize

    model = optimize.load_float(serialized_file)
    calibration, test_images, test_labels = _test_data(data_dir, mode)
    candidates = optimize.candidate_forms(model, calibration, Path(tmp), names=MODES[mode])
    float_form = optimize.float_form(model)
    float_accuracy = optimize.accuracy(float_form, test_images, test_labels)
    accuracies = {name: optimize.accuracy(form, test_images, test_labels) for name, (form, _) in candidates.items()}
    log(f"test accuracy: float {float_accuracy:.2f} %, " + ", ".join(f"{n} {a:.2f} %" for n, a in accuracies.items()))
    check = optimize.check_sample(float_form, test_images, test_labels, path=Path(tmp, C.CHECK_FILE))
    files, forms = [str(Path(tmp, C.CHECK_FILE))], {}
    for name, (_, entry) in candidates.items():
        drop = float_accuracy - accuracies[name]
        if drop > max_drop and mode != "auto":
            raise ArchiveError(
                f"{name} loses {drop:.2f} points of test accuracy ({float_accuracy:.2f} → {accuracies[name]:.2f} %), "
                f"more than --max-accuracy-drop {max_drop}: use --mode onnx or eager"
            )
        if drop > max_drop:
            log(f"left out {name}: {drop:.2f} points below float")
            continue
        files += [str(Path(tmp, entry["file"]))] if "file" in entry else []
        forms[name] = {**entry, "accuracy": accuracies[name]}
    manifest = {"float_accuracy": float_accuracy, "max_accuracy_drop": max_drop, "check": check, "forms": forms}
    path = Path(tmp, C.FORMS_FILE)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return [*files, str(path)]
