"""Explanation pictures: Integrated Gradients attributions drawn over the 28×28 input the model saw."""

from pathlib import Path

import numpy as np


def overlay(answer: dict, path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels = np.array(answer["pixels"], dtype=np.float32)
    attributions = np.array(answer["attributions"], dtype=np.float32)
    limit = float(np.abs(attributions).max()) or 1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(6, 3.3))
    left.imshow(pixels, cmap="gray")
    left.set_title("model input (28×28)", fontsize=9)
    right.imshow(pixels, cmap="gray", alpha=0.6)
    heat = right.imshow(attributions, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.7)
    right.set_title(f"attributions for digit {answer['digit']}", fontsize=9)
    for ax in (left, right):
        ax.axis("off")
    fig.colorbar(heat, ax=right, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
