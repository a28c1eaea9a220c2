"""Training: fit MnistClassificationNet on MNIST and save its state_dict, with the run's metrics beside it.

Run as `mnist-kit train` or `python train.py`; both take the same options (see --help), which make one Recipe.
Progress reaches the caller through callbacks, failures as KitError: this module knows nothing of the command line.
The stages (load_data, start_run, train_epoch → batch → train_step, run_metrics) draw the seeded generators in one
fixed order: the same recipe on the same CPU gives the same weights.
"""

import math
import os
import platform
import time
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: what decides its weights beside the data (`mnist-kit train`'s options).

    With `outliers`, each step also shows the network C.OUTLIER_BATCH synthetic non-digits (training/outliers.py) and
    pushes its answer on them towards uniform (outlier exposure, weighted C.OUTLIER_WEIGHT): what the served
    not_a_digit flag reads; C.PRINTED_DIGITS printed digits join MNIST's, so that print is not what it learns to
    doubt. With `handwriting` too, C.HANDWRITING_BATCH letters of the handwriting glyph bank's trained fonts
    (training/handwriting.py) join the non-digits of each step, and the bank's digits join MNIST's (issue 31: it
    flags letters more often, and costs some digit kinds a little; docs/SERVING.md).
    """

    epochs: int = C.EPOCHS
    batch_size: int = C.TRAIN_BATCH_SIZE
    lr: float = C.LEARNING_RATE
    seed: int = C.SEED
    limit: int | None = None  # the first `limit` MNIST training images only
    extra_batch: int = C.EXTRA_BATCH  # a fine-tune's corrections drawn into each batch
    augmentation: bool = True
    outliers: bool = True
    handwriting: bool = False
    device: str = "auto"
    precision: str = "auto"


@dataclass(frozen=True)
class NonDigits:
    """What the outlier exposure lays over and beside each step's digits."""

    outliers: torch.Tensor  # normalised synthetic non-digits
    marks: torch.Tensor  # uint8 layers of stray marks
    letters: torch.Tensor | None  # normalised letters of the glyph bank, with `handwriting`


@dataclass(frozen=True)
class Data:
    """The images one training run reads: its training digits normalised, the test set as loaded."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    printed: int = 0  # the printed and glyph bank digits, after MNIST's in train_x
    handwritten: dict = field(default_factory=lambda: {"letters": 0, "digits": 0})
    non_digits: NonDigits | None = None
    extra: tuple[torch.Tensor, torch.Tensor] | None = None  # a fine-tune's digits, normalised


@dataclass(frozen=True)
class Run:
    """A run's moving parts: what each step takes."""

    recipe: Recipe
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    device: torch.device
    dtype: torch.dtype
    steps: int  # per epoch


def fit(recipe: Recipe, out, *, data_dir=None, force=False, init=None, extra=None, on_step=None, on_epoch=None) -> dict:
    """Train by `recipe` on MNIST in `data_dir` (mnist.default_data_dir() if None), write the state_dict to `out` and
    metrics.json beside it, and return the metrics.

    An existing `out` is refused without force, before any work, as archive.build refuses: a checkpoint may be
    minutes of training. on_step(epoch, step, steps) is called after each optimiser step, on_epoch(epoch, loss,
    test_accuracy) after each epoch: the CLI draws its progress bar and prints its lines.

    Fine-tuning (training/finetune.py): `init`, a state_dict to start from instead of random weights; `extra`,
    (uint8 N×28×28, labels) of other digits, recipe.extra_batch of them drawn into every batch beside MNIST's.
    """
    if Path(out).exists() and not force:
        raise KitError(f"{out} already exists: pass --force to overwrite it")
    start = time.time()
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    device = pick_device(recipe.device)
    dtype = pick_precision(recipe.precision, device)
    data = load_data(recipe, data_dir or mnist.default_data_dir(), extra)
    run = start_run(recipe, data, init, generator=generator, device=device, dtype=dtype)
    history = []
    for epoch in range(1, recipe.epochs + 1):
        loss = train_epoch(run, data, epoch, on_step=on_step)
        history.append(evaluate(run.model, data.test_x, data.test_y))
        if on_epoch:
            on_epoch(epoch, loss, history[-1])
    metrics = run_metrics(run, data, history, init=init, extra=extra, seconds=round(time.time() - start, 1))
    save(run.model.to(memory_format=torch.contiguous_format).cpu().state_dict(), out)
    write_json(metrics, Path(out).parent / "metrics.json")
    return metrics


def load_data(recipe: Recipe, data_dir, extra) -> Data:
    """MNIST (its first `limit` training images), with the outlier exposure's digits and non-digits and a fine-tune's
    `extra` digits."""
    train_x, train_y = mnist.load(data_dir, "train")
    test_x, test_y = mnist.load(data_dir, "test")
    if recipe.limit:
        train_x, train_y = train_x[: recipe.limit], train_y[: recipe.limit]
    data = Data(train_x, train_y, test_x, test_y)
    if recipe.outliers:
        data = with_outlier_exposure(data, recipe.seed, handwriting=recipe.handwriting)
    if extra is not None:
        data = replace(data, extra=(normalize_tensor(extra[0]), extra[1].to(data.train_y.dtype)))
    return replace(data, train_x=normalize_tensor(data.train_x))


def with_outlier_exposure(data: Data, seed: int, *, handwriting: bool) -> Data:
    """`data` with printed digits (and the glyph bank's) after MNIST's, in proportion with them, and the non-digits."""
    from mnist_kit.training import outliers as synthetic

    outliers = normalize_tensor(torch.from_numpy(synthetic.make(C.OUTLIER_IMAGES, seed)))
    digits_x, digits_y = synthetic.printed_digits(C.PRINTED_DIGITS * len(data.train_x) // 60000, seed)
    letters, handwritten = None, data.handwritten
    if handwriting:  # the glyph bank's trained fonts: letters beside the non-digits, digits beside MNIST's
        letters, written_x, written_y = glyph_bank(seed, len(data.train_x))
        digits_x, digits_y = np.concatenate([digits_x, written_x]), np.concatenate([digits_y, written_y])
        handwritten = {"letters": len(letters), "digits": len(written_y)}
    return replace(
        data,
        train_x=torch.cat([data.train_x, torch.from_numpy(digits_x)]),
        train_y=torch.cat([data.train_y, torch.from_numpy(digits_y).to(data.train_y.dtype)]),
        printed=len(digits_y),
        handwritten=handwritten,
        non_digits=NonDigits(outliers, torch.from_numpy(synthetic.marks(C.MARKS, seed)), letters),
    )


def glyph_bank(seed: int, mnist_images: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The handwriting glyph bank's trained fonts: their letters (normalised), and a seeded draw of their digits and
    labels, in proportion with the MNIST images trained on."""
    from mnist_kit.training import handwriting as bank

    glyphs = bank.load()
    letters = normalize_tensor(torch.from_numpy(glyphs.select(held_out=False, digits=False).images))
    written = glyphs.select(held_out=False, digits=True)
    picks = np.random.default_rng(seed).permutation(len(written.images))
    picks = picks[: round(len(written.images) * mnist_images / 60000)]
    return letters, written.images[picks], written.labels[picks]


def start_run(recipe: Recipe, data: Data, init, *, generator, device, dtype) -> Run:
    """The network (random, or `init`'s weights), AdamW and its one-cycle schedule."""
    # Channels-last: on the AVX2 EPYC a training step took 47 ms against 63 ms contiguous (batch 128, 2 threads;
    # ATen's max pooling of NCHW tensors is many times slower there), and oneDNN prefers it on AVX-512 and AMX.
    model = MnistClassificationNet()
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    steps = math.ceil(len(data.train_x) / recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, epochs=recipe.epochs, steps_per_epoch=steps
    )
    return Run(recipe, model, optimizer, scheduler, generator, device, dtype, steps)


def train_epoch(run: Run, data: Data, epoch: int, *, on_step=None) -> float:
    """One pass over the training digits in a seeded order; the last step's loss."""
    run.model.train()
    order = torch.randperm(len(data.train_x), generator=run.generator)
    size = run.recipe.batch_size
    for step in range(run.steps):
        x, y = batch(run, data, order[step * size : (step + 1) * size])
        loss = train_step(run, x, y)
        if on_step:
            on_step(epoch, step + 1, run.steps)
    return loss.item()


def batch(run: Run, data: Data, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's inputs, the labelled digits first (MNIST's, then a fine-tune's), then the non-digits; the labels."""
    x, y = data.train_x[index], data.train_y[index]
    if data.extra is not None:
        extra_x, extra_y = data.extra
        picks = torch.randint(len(extra_x), (run.recipe.extra_batch,), generator=run.generator)
        x, y = torch.cat([x, extra_x[picks]]), torch.cat([y, extra_y[picks]])
    if data.non_digits is not None:
        x = with_non_digits(x, data.non_digits, run.generator)
    if run.recipe.augmentation:
        x = augment(x, run.generator)
    return x, y


def with_non_digits(x: torch.Tensor, non_digits: NonDigits, generator: torch.Generator) -> torch.Tensor:
    """Stray marks over a share of the digits `x`, then the non-digits beside them."""
    marked = torch.rand(len(x), generator=generator) < C.MARKED_SHARE
    marks = non_digits.marks
    layers = normalize_tensor(marks[torch.randint(len(marks), (int(marked.sum()),), generator=generator)])
    x = x.clone()
    x[marked] = torch.maximum(x[marked], layers)
    outliers = non_digits.outliers
    x = torch.cat([x, outliers[torch.randint(len(outliers), (C.OUTLIER_BATCH,), generator=generator)]])
    if non_digits.letters is not None:
        letters = non_digits.letters
        x = torch.cat([x, letters[torch.randint(len(letters), (C.HANDWRITING_BATCH,), generator=generator)]])
    return x


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimiser step: the digits' negative log-likelihood, and with outliers the non-digits' cross-entropy to
    the uniform answer."""
    labelled = len(y)
    x = x.to(run.device).contiguous(memory_format=torch.channels_last)
    with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype != torch.float32):
        log_probabilities = run.model(x)
        loss = F.nll_loss(log_probabilities[:labelled], y.to(run.device))
        if run.recipe.outliers:
            loss = loss - C.OUTLIER_WEIGHT * log_probabilities[labelled:].float().mean()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    return loss


def run_metrics(run: Run, data: Data, history: list[float], *, init, extra, seconds: float) -> dict:
    """metrics.json: the accuracies, the recipe, what was trained on, and where."""
    recipe = run.recipe
    return {
        "test_accuracy": history[-1],
        "test_accuracy_per_epoch": history,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "lr": recipe.lr,
        "seed": recipe.seed,
        "limit": recipe.limit,
        "augmentation": recipe.augmentation,
        "outliers": C.OUTLIER_IMAGES if recipe.outliers else 0,
        "printed_digits": data.printed - data.handwritten["digits"],
        "handwriting": data.handwritten,
        "precision": str(run.dtype).removeprefix("torch."),
        "train_images": len(data.train_x) - data.printed,
        "init": str(init) if init else None,
        "extra_images": len(extra[1]) if extra is not None else 0,
        "seconds": seconds,
        "device": str(run.device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }


def save(state_dict: dict, path) -> None:
    """Write atomically: a crash mid-save never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state_dict, tmp)
    os.replace(tmp, path)
