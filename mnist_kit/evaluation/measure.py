"""Evaluation: accuracy, per-digit precision and recall, a confusion matrix and the worst errors, as pictures.

Either the checkpoint in this process, or a live endpoint sent real PNGs, so what is served is what is checked.
"""

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.evaluation import kinds
from mnist_kit.files import write_json
from mnist_kit.packaging import optimize
from mnist_kit.serving import client
from mnist_kit.training.mnist import normalize_tensor
from mnist_kit.worker import answers
from mnist_kit.worker.preprocess import Picture, read_image
from mnist_kit.worker.request_errors import InputError


def predict_checkpoint(checkpoint, images: torch.Tensor) -> np.ndarray:
    """Probabilities N×10 of the float model on uint8 images."""
    try:
        model = optimize.load_float(checkpoint)
    except FileNotFoundError:
        raise KitError(f"{checkpoint} not found: train a model first (mnist-kit train)") from None
    with torch.inference_mode():
        return torch.cat(
            [model(normalize_tensor(images[i : i + 1000])).exp() for i in range(0, len(images), 1000)]
        ).numpy()


def predict_endpoint(
    url: str, images: torch.Tensor, token=None, *, concurrency: int = 16, on_result=lambda: None
) -> np.ndarray:
    """Probabilities N×10 as served: each image sent as a PNG, as a client would; on_result() after each answer."""

    def one(image: np.ndarray) -> list[float]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        return client.predict(buffer.getvalue(), url=url, token=token, retries=5)["probabilities"]

    with ThreadPoolExecutor(concurrency) as pool:
        results = []
        for probabilities in pool.map(one, images.numpy()):
            results.append(probabilities)
            on_result()
        return np.array(results)


def read_images(images: list[bytes]) -> tuple[list[Picture], np.ndarray]:
    """Encoded images through the serving preprocessing: their Pictures, and which ones it could read (a rejected
    image gets a blank picture, to be counted wrong)."""
    pictures, readable = [], []
    for data in images:
        try:
            pictures.append(read_image(data))
            readable.append(True)
        except InputError:
            pictures.append(Picture(np.zeros((28, 28), dtype=np.uint8)))
            readable.append(False)
    return pictures, np.array(readable)


def answer_checkpoint(checkpoint, pictures: list[Picture]) -> list[answers.Answer]:
    """What the served handler would answer for each picture, from the float model: digit, flags, digits."""
    rows = torch.from_numpy(np.stack(answers.images(pictures)))
    probabilities = predict_checkpoint(checkpoint, rows).astype(np.float64).round(6)
    return answers.answers(pictures, probabilities)


def real_world(checkpoint, images: torch.Tensor, labels: torch.Tensor, *, per_kind: int = 200, seed: int = 0) -> dict:
    """Per kind of held-out real-world image (evaluation/kinds.py, made from these test images), each through the
    serving preprocessing and answered as the handler answers (mnist_kit.worker.answers); `mnist` is every test
    image sent as a PNG. Percentages of the kind's images:
      accuracy        the digit is right (a rejected image is wrong; a flagged one counts if its digit is right)
      flagged         several_digits or not_a_digit: on digits, the false alarms
      several_digits, not_a_digit, low_confidence   each flag
      refused         the preprocessing said no (a blank, say)
      digits_read     several digits only: `digits` holds every one of them, in order
    For the kinds measured by a flag (kinds.FLAGGED) there is no accuracy; not_a_digit counts refused ones."""
    made = kinds.make(images.numpy(), labels.numpy(), per_kind=per_kind, seed=seed)
    made = [v for v in made if v[0] != "mnist"]
    made += [
        ("mnist", int(label), kinds.mnist_png(image, None)) for image, label in zip(images.numpy(), labels.numpy())
    ]
    pictures, readable = read_images([data for _, _, data in made])
    replies = answer_checkpoint(checkpoint, pictures)
    rows: dict[str, list[dict]] = {kind: [] for kind in kinds.KINDS}
    for (kind, label, _), reply, ok in zip(made, replies, readable):
        flags = set(reply.flags) if ok else set()
        rows[kind].append(
            {
                "accuracy": bool(ok and reply.digit == label),
                "flagged": bool(flags & {"several_digits", "not_a_digit"}),
                **{flag: flag in flags for flag in C.FLAGS},
                "refused": not ok,
                "digits_read": "".join(map(str, reply.digits or [])) == label,
            }
        )
    results = {}
    for kind, found in rows.items():
        share = {key: round(100 * float(np.mean([r[key] for r in found])), 2) for key in found[0]}
        if kind in kinds.FLAGGED:
            del share["accuracy"]
            if kind.startswith("not_digit"):
                share["not_a_digit"] = round(100 * float(np.mean([r["not_a_digit"] or r["refused"] for r in found])), 2)
        if kind != "several":
            del share["digits_read"]
        results[kind] = {"images": len(found), **share}
    return results


def write_real_world(results: dict, checkpoint, out_dir) -> Path:
    """OUT/real_world.json: the figures of the real-world table (docs/SERVING.md)."""
    from mnist_kit.machine import cpu

    metrics = Path(checkpoint).parent / "metrics.json"
    trained = json.loads(metrics.read_text()) if metrics.is_file() else {}
    model = {key: trained[key] for key in ("test_accuracy", "epochs", "seed", "seconds") if key in trained}
    path = Path(out_dir) / "real_world.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json({"checkpoint": str(checkpoint), "model": model, "machine": cpu(), "kinds": results}, path)
    return path


def real_world_table(results: dict) -> str:
    """real_world()'s figures as the text table `mnist-kit evaluate --real-world` prints."""

    def cell(r, key, width):
        return f"{r[key]:>{width - 2}.2f} %" if key in r else " " * width

    lines = ["kind          images  accuracy  flagged  several_digits  not_a_digit  digits_read"]
    for kind, r in results.items():
        lines.append(
            f"{kind:<12}  {r['images']:>6}  {cell(r, 'accuracy', 8)}  {cell(r, 'flagged', 7)}  "
            f"{cell(r, 'several_digits', 14)}  {cell(r, 'not_a_digit', 11)}  {cell(r, 'digits_read', 11)}"
        )
    lines.append("flagged: several_digits or not_a_digit (on digits, false alarms)")
    return "\n".join(lines)


def real_world_markdown(report: dict) -> str:
    """The tables of docs/SERVING.md, from a real_world.json that `mnist-kit evaluate --real-world` wrote: the digit
    kinds (accuracy, false alarms), then the kinds measured by their flag."""

    def percent(r: dict, key: str) -> str:
        return f"{r[key]:.2f} %" if key in r else ""

    results = report["kinds"]
    digits = [kind for kind, r in results.items() if "accuracy" in r]
    flagged = [kind for kind in results if kind not in digits]
    lines = ["| kind | images | accuracy | flagged |", "| --- | ---: | ---: | ---: |"]
    lines += [
        f"| {k} | {results[k]['images']} | {percent(results[k], 'accuracy')} | {percent(results[k], 'flagged')} |"
        for k in digits
    ]
    lines += ["", "| kind | images | several_digits | not_a_digit (or refused) | every digit read |"]
    lines += ["| --- | ---: | ---: | ---: | ---: |"]
    lines += [
        f"| {k} | {results[k]['images']} | {percent(results[k], 'several_digits')} | "
        f"{percent(results[k], 'not_a_digit')} | {percent(results[k], 'digits_read')} |"
        for k in flagged
    ]
    return "\n".join(lines)


def flag_markdown(report: dict) -> str:
    """The README's not_a_digit table, from a real_world.json: per kind of non-digit the share flagged (or refused),
    per kind of real digit the share falsely flagged (several_digits or not_a_digit)."""
    results = report["kinds"]
    parts = [kind for kind in results if kind.startswith("not_digit/")]
    digits = [kind for kind, r in results.items() if "accuracy" in r]
    rows = max(len(parts), len(digits))
    lines = [
        "| non-digits, by kind | flagged | real digits, by kind | falsely flagged |",
        "| --- | ---: | --- | ---: |",
    ]
    for n in range(rows):
        left = (
            f"{parts[n].removeprefix('not_digit/')} | {results[parts[n]]['not_a_digit']:.1f} %"
            if n < len(parts)
            else " | "
        )
        right = f"{digits[n]} | {results[digits[n]]['flagged']:.2f} %" if n < len(digits) else " | "
        lines.append(f"| {left} | {right} |")
    return "\n".join(lines)


def summary_table(summary: dict, source) -> str:
    """summarize()'s figures as the text `mnist-kit evaluate` prints: accuracy, then precision and recall per digit."""
    lines = [
        f"{source}: {summary['accuracy']:.2f} % of {summary['images']} test images ({summary['errors']} errors)",
        "digit  precision  recall",
    ]
    lines += [f"{d:>5}  {r['precision']:>8.2f}  {r['recall']:>6.2f}" for d, r in summary["per_digit"].items()]
    return "\n".join(lines)


def summarize(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    predicted = probabilities.argmax(1)
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_digit = {}
    for d in range(10):
        tp = confusion[d, d]
        per_digit[str(d)] = {
            "precision": round(100 * tp / max(confusion[:, d].sum(), 1), 2),
            "recall": round(100 * tp / max(confusion[d].sum(), 1), 2),
            "support": int(confusion[d].sum()),
        }
    return {
        "images": int(len(labels)),
        "accuracy": round(100 * float((predicted == labels).mean()), 2),
        "errors": int((predicted != labels).sum()),
        "per_digit": per_digit,
        "confusion_matrix": confusion.tolist(),
    }


def worst_errors(probabilities: np.ndarray, labels: np.ndarray, count: int = 36) -> list[int]:
    """Indexes of the misclassified images, most confidently wrong first."""
    predicted = probabilities.argmax(1)
    wrong = np.nonzero(predicted != labels)[0]
    return wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:count].tolist()


def write_reports(summary: dict, probabilities, labels, *, images, out_dir) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "evaluation.json",
        "confusion": out_dir / "confusion_matrix.png",
        "misclassified": out_dir / "misclassified.png",
    }

    confusion = np.array(summary["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    shown = np.log1p(confusion)
    ax.imshow(shown, cmap="Blues")
    for t in range(10):
        for p in range(10):
            if confusion[t, p]:
                ax.text(
                    p,
                    t,
                    confusion[t, p],
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if shown[t, p] > shown.max() / 2 else "black",
                )
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(f"MNIST test set: {summary['accuracy']:.2f} % of {summary['images']} ({summary['errors']} errors)")
    fig.tight_layout()
    fig.savefig(paths["confusion"], dpi=100)
    plt.close(fig)

    worst = worst_errors(probabilities, labels)
    columns = 9
    rows = max(1, -(-len(worst) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.45))
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).flat, worst):
        predicted = int(probabilities[i].argmax())
        ax.imshow(images[i], cmap="gray")
        ax.set_title(f"true {labels[i]} → {predicted}\n{100 * probabilities[i, predicted]:.0f} %", fontsize=7)
    fig.suptitle("Most confident errors (true → predicted, confidence)", fontsize=9)
    fig.tight_layout()
    fig.savefig(paths["misclassified"], dpi=100)
    plt.close(fig)

    paths["json"].write_text(json.dumps({**summary, "worst_errors": worst}, indent=2) + "\n")
    return paths
