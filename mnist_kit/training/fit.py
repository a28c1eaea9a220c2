"""Training: fit MnistClassificationNet on MNIST and save its state_dict, with the run's metrics beside it.

Run as `mnist-kit train` or `python train.py`; both take the same options (see --help). Progress reaches the
caller through callbacks, failures as KitError: this module knows nothing of the command line.
"""

import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.files import write_json
from mnist_kit.training import mnist
from mnist_kit.training.mnist import normalize_tensor
from mnist_model import MnistClassificationNet


def pick_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise KitError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def pick_precision(precision: str, device: torch.device) -> torch.dtype:
    """bfloat16 autocast where the CPU computes it natively (AMX / AVX512-BF16): about twice as fast to train."""
    if precision == "auto":
        native = device.type == "cuda" or torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        precision = "bf16" if native else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, scale, shift and stroke width of a normalised batch: the variation left in real digits
    after the serving preprocessing has cropped, scaled and centred them."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    background = normalize_tensor(torch.zeros(1, 1, 1, dtype=torch.uint8)).item()
    ink = F.grid_sample(x - background, grid, align_corners=False)
    # Stroke width: blend towards a 3×3 dilation (thicker pen) or erosion (thinner pen).
    width = (torch.rand(n, 1, 1, 1, generator=generator) * 1.5 - 0.5).to(x.device)
    thicker = F.max_pool2d(ink, 3, 1, 1)
    thinner = -F.max_pool2d(-ink, 3, 1, 1)
    ink = torch.where(width > 0, ink + width * (thicker - ink), ink - width * (thinner - ink))
    return ink + background


@torch.inference_mode()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Accuracy in percent of `model` on uint8 images."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        x = normalize_tensor(images[i : i + batch_size]).to(device).contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1).cpu() == labels[i : i + batch_size]).sum().item()
    return 100.0 * correct / len(images)


def fit(
    data_dir,
    out,
    *,
    epochs=C.EPOCHS,
    batch_size=C.TRAIN_BATCH_SIZE,
    lr=C.LEARNING_RATE,
    seed=C.SEED,
    limit=None,
    device="auto",
    augmentation=True,
    precision="auto",
    outliers=True,
    handwriting=False,
    force=False,
    init=None,
    extra=None,
    on_step=None,
    on_epoch=None,
) -> dict:
    """Train, write the state_dict to `out` and metrics.json beside it, and return the metrics.

    With `outliers`, each step also shows the network C.OUTLIER_BATCH synthetic non-digits (training/outliers.py) and
    pushes its answer on them towards uniform (outlier exposure, weighted C.OUTLIER_WEIGHT): what the served
    not_a_digit flag reads; C.PRINTED_DIGITS printed digits join MNIST's, so that print is not what it learns to
    doubt. With `handwriting` too, C.HANDWRITING_BATCH letters of the handwriting glyph bank's trained fonts
    (training/handwriting.py) join the non-digits of each step, and the bank's digits join MNIST's (issue 31: it
    flags letters more often, and costs some digit kinds a little; docs/SERVING.md). An existing `out` is refused
    without force, before any work, as archive.build refuses: a checkpoint may be minutes of training.
    on_step(epoch, step, steps) is called after each optimiser step, on_epoch(epoch, loss, test_accuracy) after
    each epoch: the CLI draws its progress bar and prints its lines.

    Fine-tuning (training/finetune.py): `init`, a state_dict to start from instead of random weights; `extra`,
    (uint8 N×28×28, labels) of other digits, C.EXTRA_BATCH of them drawn into every batch beside MNIST's.
    """
    if Path(out).exists() and not force:
        raise KitError(f"{out} already exists: pass --force to overwrite it")
    start = time.time()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = pick_device(device)
    dtype = pick_precision(precision, device)
    train_x, train_y = mnist.load(data_dir, "train")
    test_x, test_y = mnist.load(data_dir, "test")
    if limit:
        train_x, train_y = train_x[:limit], train_y[:limit]
    printed = 0
    handwritten = {"letters": 0, "digits": 0}
    if outliers:
        from mnist_kit.training import outliers as synthetic

        outlier_x = normalize_tensor(torch.from_numpy(synthetic.make(C.OUTLIER_IMAGES, seed)))
        printed_x, printed_y = synthetic.printed_digits(C.PRINTED_DIGITS * len(train_x) // 60000, seed)
        if handwriting:  # the glyph bank's trained fonts: letters beside the non-digits, digits beside MNIST's
            from mnist_kit.training import handwriting as bank

            glyphs = bank.load()
            letters_x = normalize_tensor(torch.from_numpy(glyphs.select(held_out=False, digits=False).images))
            written = glyphs.select(held_out=False, digits=True)
            picks = np.random.default_rng(seed).permutation(len(written.images))
            picks = picks[: round(len(written.images) * len(train_x) / 60000)]
            printed_x = np.concatenate([printed_x, written.images[picks]])
            printed_y = np.concatenate([printed_y, written.labels[picks]])
            handwritten = {"letters": len(letters_x), "digits": len(picks)}
        train_x = torch.cat([train_x, torch.from_numpy(printed_x)])
        train_y = torch.cat([train_y, torch.from_numpy(printed_y).to(train_y.dtype)])
        printed = len(printed_y)
        marks_x = torch.from_numpy(synthetic.marks(C.MARKS, seed))
    train_x = normalize_tensor(train_x)

    # Channels-last: on the AVX2 EPYC a training step took 47 ms against 63 ms contiguous (batch 128, 2 threads;
    # ATen's max pooling of NCHW tensors is many times slower there), and oneDNN prefers it on AVX-512 and AMX.
    model = MnistClassificationNet()
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    model = model.to(device).to(memory_format=torch.channels_last)
    if extra is not None:
        extra_x, extra_y = normalize_tensor(extra[0]), extra[1].to(train_y.dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = math.ceil(len(train_x) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            x, y = train_x[index], train_y[index]
            if extra is not None:
                picks = torch.randint(len(extra_x), (C.EXTRA_BATCH,), generator=generator)
                x, y = torch.cat([x, extra_x[picks]]), torch.cat([y, extra_y[picks]])
            labelled = len(y)
            if outliers:  # stray marks over a share of the digits, then the non-digits beside them
                marked = torch.rand(labelled, generator=generator) < C.MARKED_SHARE
                layers = normalize_tensor(
                    marks_x[torch.randint(len(marks_x), (int(marked.sum()),), generator=generator)]
                )
                x = x.clone()
                x[marked] = torch.maximum(x[marked], layers)
                x = torch.cat([x, outlier_x[torch.randint(len(outlier_x), (C.OUTLIER_BATCH,), generator=generator)]])
                if handwriting:
                    x = torch.cat(
                        [x, letters_x[torch.randint(len(letters_x), (C.HANDWRITING_BATCH,), generator=generator)]]
                    )
            if augmentation:
                x = augment(x, generator)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                log_probabilities = model(x)
                loss = F.nll_loss(log_probabilities[:labelled], y.to(device))
                if outliers:  # cross-entropy to the uniform answer
                    loss = loss - C.OUTLIER_WEIGHT * log_probabilities[labelled:].float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if on_step:
                on_step(epoch, step + 1, steps)
        accuracy = evaluate(model, test_x, test_y)
        history.append(accuracy)
        if on_epoch:
            on_epoch(epoch, loss.item(), accuracy)

    metrics = {
        "test_accuracy": history[-1],
        "test_accuracy_per_epoch": history,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "limit": limit,
        "augmentation": augmentation,
        "outliers": C.OUTLIER_IMAGES if outliers else 0,
        "printed_digits": printed - handwritten["digits"],
        "handwriting": handwritten,
        "precision": str(dtype).removeprefix("torch."),
        "train_images": len(train_x) - printed,
        "init": str(init) if init else None,
        "extra_images": len(extra[1]) if extra is not None else 0,
        "seconds": round(time.time() - start, 1),
        "device": str(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    save(model.to(memory_format=torch.contiguous_format).cpu().state_dict(), out)
    write_json(metrics, Path(out).parent / "metrics.json")
    return metrics


def save(state_dict: dict, path) -> None:
    """Write atomically: a crash mid-save never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state_dict, tmp)
    os.replace(tmp, path)
