#!/usr/bin/env python
"""The feedback loop end to end, with a simulated user on digits the model reads less well: the 1 797 UCI optical
digits scikit-learn ships (8×8, by other writers), sent as 96×96 PNGs.

1. Version 1.0 (the archive) on a real TorchServe, with `mnist-kit ui`'s server in front of it.
2. The user sends each digit of one half through the pad's /api/predict, and corrects every misread one through
   /api/feedback, as the page's "wrong? it is a _" buttons do.
3. `train --feedback`: the checkpoint fine-tuned on MNIST and the corrections; `archive --version 2.0`.
4. TorchServe with both versions; `mnist-kit ab` on the other half, which nothing was trained on, and on MNIST's
   test set; B promoted only if better there and not worse on MNIST, in all or on any digit's images (the report's
   ab_mnist carries each version's accuracy per digit, which the promotion rule reads).

    python scripts/feedback_loop.py [--checkpoint checkpoints/mnist_sd.pt] [--archive model_store/mnist.mar]

Works on copies in a temporary folder: the kit's own checkpoint, model store and feedback database are left as they
are. Writes reports/feedback_loop.json. Needs scikit-learn (in the kit's dev extra).
"""

import argparse
import base64
import json
import shutil
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

import numpy as np
from uci_digits import PRESENTATIONS, png

from mnist_kit import constants as C
from mnist_kit.bench.report import machine
from mnist_kit.feedback import ab
from mnist_kit.feedback.store import Store
from mnist_kit.packaging import archive
from mnist_kit.serving import client
from mnist_kit.serving.torchserve.launcher import PrivateServer
from mnist_kit.serving.torchserve.management import Management
from mnist_kit.training import mnist
from mnist_kit.training.finetune import finetune
from mnist_kit.ui.pad_client import Reader
from mnist_kit.ui.server import PadServer

PRESENTATION = "96×96 PNG, bilinear, white on black"


def post(url: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def correct_misread(pad_url: str, images: list[bytes], labels: list[int]) -> int:
    """The simulated user: each image to the pad; every misread one corrected. How many were corrected."""
    corrected = 0
    for image, label in zip(images, labels):
        reading = post(f"{pad_url}api/predict", image, "image/png")
        if reading["digit"] != label:
            answer = {"digit": reading["digit"], "confidence": reading["confidence"], "version": reading["version"]}
            body = {"image": base64.b64encode(image).decode(), "label": label, "answer": answer}
            post(f"{pad_url}api/feedback", json.dumps(body).encode(), "application/json")
            corrected += 1
    return corrected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=C.CHECKPOINT)
    parser.add_argument("--archive", default=f"{C.MODEL_STORE}/{C.MODEL_NAME}.mar")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=f"{C.REPORTS}/feedback_loop.json")
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    data_dir = args.data_dir or mnist.default_data_dir()
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    user, other = order[: len(order) // 2], order[len(order) // 2 :]
    images = [png(d, *PRESENTATIONS[PRESENTATION]) for d in digits.images]
    labels = [int(t) for t in digits.target]
    work = Path(tempfile.mkdtemp(prefix="mnist-kit-loop-"))
    try:
        store = work / "model-store"
        store.mkdir()
        shutil.copy(args.archive, store / f"{C.MODEL_NAME}.mar")
        feedback = Store(work / C.FEEDBACK_DB)
        print("1-2. version 1.0 served; the user corrects what it misreads in one half", flush=True)
        with PrivateServer(store) as ts:
            pad = PadServer(Reader(ts.inference_url, C.MODEL_NAME, ts.management_url), port=0, feedback=feedback)
            threading.Thread(target=pad.serve_forever, daemon=True).start()
            try:
                corrected = correct_misread(pad.url, [images[i] for i in user], [labels[i] for i in user])
            finally:
                pad.shutdown()
                pad.server_close()
        print(f"   {corrected} of {len(user)} corrected", flush=True)

        print("3. train --feedback, archive --version 2.0", flush=True)
        checkpoint = work / "checkpoints" / "mnist_sd.pt"
        checkpoint.parent.mkdir()
        shutil.copy(args.checkpoint, checkpoint)
        corrections = feedback.corrections()
        pairs = [(c.image, c.label) for c in corrections]
        metrics = finetune(
            data_dir, pairs, checkpoint, store=feedback, sources=[f"correction {c.id}" for c in corrections]
        )
        archive.build(checkpoint, store, version="2.0", data_dir=data_dir)

        print("4. both versions served: A/B on the other half, and on MNIST's test set", flush=True)
        with PrivateServer(store, load_models=f"{C.MODEL_NAME}.mar,{C.MODEL_NAME}-2.0.mar") as ts:
            result = ab.run([(images[i], labels[i]) for i in other], "1.0", "2.0", url=ts.inference_url)
            mnist_result = ab.run(ab.labelled_images("mnist", data_dir=data_dir), "1.0", "2.0", url=ts.inference_url)
            promoted, why = ab.promotion(result, mnist_result)
            if promoted:
                Management(ts.management_url).set_default(C.MODEL_NAME, "2.0")
            default = client.described(ts.management_url, C.MODEL_NAME)[0]["modelVersion"]
        report = {
            "machine": machine(),
            "command": " ".join(["python", *sys.argv]),
            "presentation": PRESENTATION,
            "user_half": len(user),
            "corrected": corrected,
            "finetune": metrics["feedback"] | {"seconds": metrics["seconds"]},
            "ab_other_half": result,
            "ab_mnist": mnist_result,
            "error_rate_other_half": {
                "1.0": round(100 - result["a"]["accuracy"], 3),
                "2.0": round(100 - result["b"]["accuracy"], 3),
            },
            "promoted": promoted,
            "why": why,
            "default_version": default,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    rates = report["error_rate_other_half"]
    print(
        f"other half: error {rates['1.0']:.2f} % (1.0) → {rates['2.0']:.2f} % (2.0), McNemar p = "
        f"{result['mcnemar_p']:.2g}; MNIST test {mnist_result['a']['accuracy']:.2f} % → "
        f"{mnist_result['b']['accuracy']:.2f} %; {'promoted' if promoted else 'not promoted'}: {why}"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
