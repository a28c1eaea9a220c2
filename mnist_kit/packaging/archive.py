"""Archiving: check a state_dict against the model, then pack it with torch-model-archiver into a .mar."""

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

import mnist_model
from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.packaging import mar

HANDLER = importlib.util.find_spec("mnist_handler").origin
PACKAGE = Path(C.__file__).parent


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

    mode: "auto" packs the state_dict with every serving form that keeps the float model's test accuracy
    (within 0.05 points): the worker times them on its CPU at start and serves the fastest
    (mnist_kit.worker.forms). "eager" packs the state_dict with mnist_model.py (the tutorial's eager mode);
    "script" packs frozen TorchScript; "int8" packs int8 TorchScript alone, refused if it loses more than
    0.05 points: max_accuracy_drop, in points of MNIST test accuracy.
    """
    check_state_dict(serialized_file)
    export_path = Path(export_path)
    target = export_path / mar_filename(model_name, version)
    if target.exists() and not force:
        raise ArchiveError(f"{target} already exists: pass --force to overwrite it")
    export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=export_path, prefix=".archive-") as tmp:
        extra_files = [_worker_package(tmp)]
        model_file = None
        if mode == "eager":
            weights, model_file = serialized_file, mnist_model.__file__
        elif mode == "auto":
            weights = serialized_file
            forms = _serving_forms(serialized_file, data_dir, tmp, log=log, max_drop=max_accuracy_drop)
            extra_files += [mnist_model.__file__, *forms]
        else:
            weights = _serving_model(
                serialized_file, mode, data_dir=data_dir, tmp=tmp, log=log, max_drop=max_accuracy_drop
            )
            explain_weights = Path(tmp, C.EXPLAIN_WEIGHTS)
            shutil.copy(serialized_file, explain_weights)
            extra_files += [mnist_model.__file__, str(explain_weights)]
        built = mar.package(
            model_name=model_name,
            version=version,
            handler=HANDLER,
            export_path=tmp,
            serialized_file=weights,
            model_file=model_file,
            extra_files=extra_files,
            config=model_config(batch_size, max_batch_delay_ms, serving_form),
        )
        os.replace(built, target)
    return target


def _worker_package(tmp: str) -> str:
    """A folder holding mnist_kit/ with only what the handler imports beyond torch, torchvision, PIL, numpy and ts:
    the package's empty __init__, its constants and worker/. torch-model-archiver copies a folder's contents to
    the archive root, so the worker imports them as mnist_kit.* with or without mnist-kit installed."""
    stage = Path(tmp, "worker-files", "mnist_kit")
    shutil.copytree(PACKAGE / "worker", stage / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "constants.py"):
        shutil.copy(PACKAGE / name, stage / name)
    return str(stage.parent)


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


def _serving_forms(serialized_file, data_dir, tmp: str, *, log, max_drop: float) -> list[str]:
    """Write the int8 form and forms.json (each form kept only within 0.05 points of the float model's test
    accuracy) into tmp; return their paths."""
    from mnist_kit.packaging import optimize

    model = optimize.load_float(serialized_file)
    calibration, test_images, test_labels = _test_data(data_dir, "auto")
    candidates = optimize.candidate_forms(model, calibration)
    accuracies = {name: optimize.accuracy(form, test_images, test_labels) for name, form in candidates.items()}
    float_accuracy = accuracies["fp32"]
    log("test accuracy: " + ", ".join(f"{name} {a:.2f} %" for name, a in accuracies.items()))
    files, forms = [], {}
    for name, form in candidates.items():
        if float_accuracy - accuracies[name] > max_drop:
            log(f"left out {name}: {float_accuracy - accuracies[name]:.2f} points below float")
            continue
        file = Path(serialized_file).name
        if isinstance(form, torch.jit.ScriptModule):
            file = f"{name}.pt"
            form.save(str(Path(tmp, file)))
            files.append(str(Path(tmp, file)))
        forms[name] = {"file": file, "accuracy": accuracies[name]}
    manifest = Path(tmp, C.FORMS_FILE)
    manifest.write_text(json.dumps({"float_accuracy": float_accuracy, "forms": forms}, indent=2) + "\n")
    return [*files, str(manifest)]


def _serving_model(serialized_file, mode: str, *, data_dir, tmp: str, log, max_drop: float) -> str:
    """Write the TorchScript form of the weights into tmp and return its path."""
    from mnist_kit.packaging import optimize

    model = optimize.load_float(serialized_file)
    path = Path(tmp, "model.pt")
    if mode == "script":
        optimize.script(model).save(str(path))
        return str(path)
    calibration, test_images, test_labels = _test_data(data_dir, mode)
    quantized = optimize.quantize_int8(model, calibration)
    float_accuracy = optimize.accuracy(model, test_images, test_labels)
    int8_accuracy = optimize.accuracy(quantized, test_images, test_labels)
    log(f"test accuracy: float {float_accuracy:.2f} %, int8 {int8_accuracy:.2f} %")
    if float_accuracy - int8_accuracy > max_drop:
        raise ArchiveError(
            f"int8 loses {float_accuracy - int8_accuracy:.2f} points of test accuracy "
            f"({float_accuracy:.2f} → {int8_accuracy:.2f} %): use --mode script or eager"
        )
    quantized.save(str(path))
    return str(path)
