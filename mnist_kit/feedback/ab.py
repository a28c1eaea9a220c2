"""`mnist-kit ab`: two versions of the model, served side by side, compared on the same labelled images.

Each image goes to both versions, so the comparison is paired: McNemar's exact test on the images one version reads
and the other does not (the images both read, or both miss, say nothing about which is better). The verdict names
a difference only when that test's two-sided p is below the significance level and there are enough images.
"""

import io
import json
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mnist_kit import constants as C
from mnist_kit.errors import KitError
from mnist_kit.feedback.store import labelled_folder
from mnist_kit.files import sha256
from mnist_kit.percentiles import percentiles
from mnist_kit.serving import client

SETS = ("feedback", "real-world", "mnist")
MIN_IMAGES = 100  # below this, no verdict is given, whatever the test says
PROMOTION_MARGIN = 0.1  # points of MNIST test accuracy B may lose and still be promoted


class ABError(KitError):
    """An A/B test that cannot be run or trusted; the message says why."""


@dataclass
class Side:
    """What one version did on the set: `correct` has an entry per image, False for an image it answered with an
    error (a version that refuses the images it would misread gains nothing by it); `errors` says which; `labels`,
    each image's digit, gives the accuracy per digit."""

    version: str
    correct: list[bool] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        images = len(self.correct)
        return {
            "version": self.version,
            "images": images,
            "accuracy": round(100 * sum(self.correct) / images, 3) if images else None,
            "per_digit": self.per_digit(),
            "mean_confidence": round(statistics.fmean(self.confidence), 4) if self.confidence else None,
            **percentiles(self.ms),
            "errors": len(self.errors),
            "error_examples": sorted(set(self.errors))[:3],
        }

    def per_digit(self) -> dict[str, float]:
        """Accuracy on the images of each digit (the keys are strings, as in JSON)."""
        read = {}
        for label, right in zip(self.labels, self.correct):
            read.setdefault(label, []).append(right)
        return {str(d): round(100 * sum(read[d]) / len(read[d]), 3) for d in sorted(read)}


@dataclass
class ImageSet:
    """The labelled images an A/B test scores, what was left out of them and why (reason → how many), and which
    look at these images this is (1 + the most verdicts any of them was already given on)."""

    name: str
    pairs: list[tuple[bytes, int]]
    digests: list[str]  # each image's sha256, in the same order
    left_out: dict[str, int]
    look: int


def image_set(
    which: str, *, store, checkpoints=None, data_dir=None, fresh: bool = False, limit: int | None = None
) -> ImageSet:
    """The set `ab` scores. Of the stored corrections or a folder, only the images no recorded fine-tune trained
    on (a model is not tested on what it learnt), after checking that every fine-tune of the checkpoints folder
    is recorded (else which images it learnt cannot be told, and the test is refused). With `fresh`, only images no
    earlier verdict was given on."""
    hashed = [(data, label, sha256(data)) for data, label in labelled_images(which, data_dir=data_dir, store=store)]
    left_out = {}
    if which not in ("real-world", "mnist"):
        check_recorded(checkpoints, store)
        trained = store.trained_by()
        finetunes = sorted({f for _, _, digest in hashed for f in trained.get(digest, [])})
        kept = [item for item in hashed if item[2] not in trained]
        if len(kept) < len(hashed):
            left_out[f"trained on by fine-tune {', '.join(map(str, finetunes))}"] = len(hashed) - len(kept)
        hashed = kept
    seen = store.verdicts_per_image()
    if fresh:
        kept = [item for item in hashed if item[2] not in seen]
        if len(kept) < len(hashed):
            left_out["given on in an earlier verdict (--fresh)"] = len(hashed) - len(kept)
        hashed = kept
    if not hashed:
        why = "; ".join(f"{count} {reason}" for reason, count in left_out.items())
        raise ABError(
            f"no images of the set {which!r} are left to score ({why}): collect new corrections, or use "
            "a folder of new labelled images (--set DIR)"
        )
    hashed = hashed[:limit] if limit else hashed
    look = 1 + max(seen.get(digest, 0) for _, _, digest in hashed)
    return ImageSet(which, [(data, label) for data, label, _ in hashed], [d for _, _, d in hashed], left_out, look)


def check_recorded(checkpoints, store) -> None:
    """Refuse when a fine-tune in the checkpoints folder (a metrics*.json with an `init`) is not recorded in the
    store with the weights it wrote: the images it learnt cannot be told from the held-out ones."""
    recorded = store.finetunes()
    for path in sorted(Path(checkpoints).glob("metrics*.json")) if checkpoints else []:
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ABError(f"cannot read {path} ({e}), so cannot tell which images its model trained on") from None
        if not isinstance(metrics, dict) or not metrics.get("init"):
            continue  # trained from scratch: on MNIST's training set alone
        finetune = (metrics.get("feedback") or {}).get("finetune")
        weights = (metrics.get("feedback") or {}).get("weights_sha256")
        if finetune not in recorded or recorded[finetune]["weights_sha256"] != weights:
            raise ABError(
                f"{path} records a fine-tune that {store.path} has no record of (made by an older kit, with another "
                "database, or stopped before it finished), so which images it learnt cannot be told from held-out "
                "ones: compare on images no fine-tune learns (--set real-world or --set mnist), or, if neither "
                f"version compared comes from that fine-tune, move {path.name} out of {path.parent}"
            )


def look_level(alpha: float, look: int) -> float:
    """The significance level of the k-th verdict on the same images: alpha / (k (k + 1)), which sum to alpha over
    every look, so trying until one passes cannot push the chance of a false "B better" above alpha."""
    return alpha / (look * (look + 1))


def look_sentence(look: int, alpha: float) -> str:
    earlier = "no earlier verdict" if look == 1 else f"{look - 1} earlier verdict{'s' if look > 2 else ''}"
    return (
        f"look {look} at these images ({earlier} on any of them): tested at alpha {alpha:g} / ({look} × {look + 1}) "
        f"= {look_level(alpha, look):.3g}, so all looks together keep {alpha:g}"
    )


def record(store, images: ImageSet, result: dict) -> None:
    """Remember a verdict and the images it was given on (not "too few images": no verdict was given)."""
    if result["verdict"] in ("B better", "no difference shown", "B worse"):
        versions = (result["a"]["version"], result["b"]["version"])
        store.record_verdict(
            images.name,
            images.digests,
            versions=versions,
            look=images.look,
            alpha=result["alpha"],
            p=result["mcnemar_p"],
            verdict=result["verdict"],
        )


def labelled_images(which: str, *, data_dir=None, store=None) -> list[tuple[bytes, int]]:
    """(image file, digit) pairs of a set: the stored corrections, the held-out real-world kinds (digits only),
    MNIST's 10 000 test images as PNGs, or a folder of LABEL-*.png (`feedback export`'s layout) or LABEL/*.png."""
    if which == "feedback":
        pairs = [(c.image, c.label) for c in store.corrections()]
    elif which == "real-world":
        from mnist_kit.evaluation import kinds
        from mnist_kit.training import mnist

        images, labels = mnist.load(data_dir, "test", download=False)
        made = kinds.make(images.numpy(), labels.numpy(), per_kind=200, seed=0)
        pairs = [(data, label) for _, label, data in made if isinstance(label, int)]
    elif which == "mnist":
        from mnist_kit.training import mnist

        images, labels = mnist.load(data_dir, "test", download=False)
        pairs = [(png(image), int(label)) for image, label in zip(images.numpy(), labels.numpy())]
    else:
        pairs = labelled_folder(Path(which))
    if not pairs:
        raise ABError(f"the set {which!r} has no labelled images")
    return pairs


def png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def mcnemar(b_only: int, a_only: int) -> float:
    """McNemar's exact test: the two-sided p of so uneven a split of the discordant pairs, were each pair as likely
    to go either way."""
    n = b_only + a_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b_only, a_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def run(
    pairs: list[tuple[bytes, int]],
    a: str,
    b: str,
    *,
    url: str = C.INFERENCE_URL,
    url_b: str | None = None,
    model: str = C.MODEL_NAME,
    token: str | None = None,
    concurrency: int = 4,
    alpha: float = C.AB_ALPHA,
    progress=lambda done, total: None,
) -> dict:
    """Each image to version a and version b (at url, or b at url_b: another server, such as a kserve runtime
    serving the new archive), then the comparison."""
    sides = {"a": Side(a), "b": Side(b)}
    targets = {"a": (url, f"{model}/{a}"), "b": (url_b or url, model if url_b else f"{model}/{b}")}
    outcomes = [{} for _ in pairs]

    def ask(index: int) -> None:
        data, label = pairs[index]
        for key, (address, name) in targets.items():
            start = time.perf_counter()
            try:
                answer = client.predict(data, address, name, token=token, retries=3)
                outcomes[index][key] = (answer["digit"] == label, answer["confidence"], time.perf_counter() - start)
            except client.ClientError as e:
                if e.server_wide:
                    raise
                outcomes[index][key] = e.detail

    with ThreadPoolExecutor(concurrency) as pool:
        for done, _ in enumerate(pool.map(ask, range(len(pairs))), 1):
            progress(done, len(pairs))
    a_only = b_only = 0
    for outcome, (_, label) in zip(outcomes, pairs):
        for key, side in sides.items():
            side.labels.append(label)
            if isinstance(outcome[key], str):  # an error: a wrong answer, in the accuracy and the paired test
                side.errors.append(outcome[key])
                side.correct.append(False)
            else:
                right, confidence, seconds = outcome[key]
                side.correct.append(right)
                side.confidence.append(confidence)
                side.ms.append(1000 * seconds)
        a_only += sides["a"].correct[-1] and not sides["b"].correct[-1]
        b_only += sides["b"].correct[-1] and not sides["a"].correct[-1]
    return compare(sides["a"], sides["b"], a_only=a_only, b_only=b_only, alpha=alpha)


def compare(a: Side, b: Side, *, a_only: int, b_only: int, alpha: float = C.AB_ALPHA) -> dict:
    """The two sides' figures, the paired test and the verdict."""
    p = mcnemar(b_only, a_only)
    paired = a_only + b_only + sum(1 for x, y in zip(a.correct, b.correct) if x == y)
    if paired < MIN_IMAGES:
        verdict = f"too few images for a verdict ({paired} paired, at least {MIN_IMAGES})"
    elif p >= alpha:
        verdict = "no difference shown"
    else:
        verdict = "B better" if b_only > a_only else "B worse"
    return {
        "a": a.summary(),
        "b": b.summary(),
        "paired_images": paired,
        "only_a_right": a_only,
        "only_b_right": b_only,
        "mcnemar_p": p,
        "alpha": alpha,
        "verdict": verdict,
    }


def digits_lost(mnist_result: dict, *, margin: float = C.PROMOTION_DIGIT_MARGIN) -> list[dict]:
    """The digits on whose MNIST test images B's accuracy is below A's by more than `margin` points, with both
    accuracies: what a version that reads one digit as another shows, however little its total moves."""
    a, b = mnist_result["a"]["per_digit"], mnist_result["b"]["per_digit"]
    return [
        {"digit": int(digit), "a": a[digit], "b": b[digit], "drop": round(a[digit] - b[digit], 3)}
        for digit in a
        if a[digit] - b[digit] > margin
    ]


def promotion(
    result: dict,
    mnist_result: dict,
    *,
    margin: float = PROMOTION_MARGIN,
    digit_margin: float = C.PROMOTION_DIGIT_MARGIN,
) -> tuple[bool, str]:
    """Whether B may become the default: better on the chosen set, and on MNIST's test set not worse than A by more
    than `margin` points in all, nor by more than `digit_margin` points on any digit's images; and why (not)."""
    if result["verdict"] != "B better":
        return False, f"B is not shown better on this set ({result['verdict']}, p = {result['mcnemar_p']:.3g})"
    for checked in (result, mnist_result):
        if checked["b"]["errors"] > checked["a"]["errors"]:
            return False, (
                f"B answered {checked['b']['errors']} images with an error, A {checked['a']['errors']}: a version "
                "that fails more requests is not promoted, whatever it reads"
            )
    drop = mnist_result["a"]["accuracy"] - mnist_result["b"]["accuracy"]
    if drop > margin:
        return False, f"B loses {drop:.2f} points on MNIST's test set, more than the {margin} allowed"
    if mnist_result["verdict"] == "B worse":
        return False, f"B is worse on MNIST's test set (p = {mnist_result['mcnemar_p']:.3g})"
    lost = digits_lost(mnist_result, margin=digit_margin)
    if lost:
        which = "; ".join(f"the {d['digit']}s {d['a']:.2f} % (A) → {d['b']:.2f} % (B)" for d in lost)
        return False, f"B loses more than the {digit_margin} points allowed per digit on MNIST's test set: {which}"
    return True, (
        f"B is better (p = {result['mcnemar_p']:.3g}) and within {margin} points on MNIST's test set, and within "
        f"{digit_margin} on each digit's images"
    )


def table(report: dict) -> str:
    """What `mnist-kit ab` prints: each version's figures, the paired test, the verdict, the promotion."""
    lines = [f"A/B on {report['set']}: {report['paired_images']} images, each to both versions"]
    lines += [f"left out: {count} images {reason}" for reason, count in report.get("left_out", {}).items()]
    lines.append("")
    lines.append(f"{'':10}{'accuracy':>10}{'confidence':>12}{'p50':>9}{'p99':>9}{'errors':>8}")
    for key in ("a", "b"):
        s = report[key]
        accuracy = f"{s['accuracy']:.2f} %" if s["accuracy"] is not None else "-"
        confidence = f"{s['mean_confidence']:.3f}" if s["mean_confidence"] is not None else "-"
        p50 = f"{s['p50_ms']:.1f} ms" if s["p50_ms"] is not None else "-"
        p99 = f"{s['p99_ms']:.1f} ms" if s["p99_ms"] is not None else "-"
        lines.append(f"{key.upper()} {s['version']:<8}{accuracy:>10}{confidence:>12}{p50:>9}{p99:>9}{s['errors']:>8}")
    lines += [
        "",
        f"only A right: {report['only_a_right']}, only B right: {report['only_b_right']}; "
        f"McNemar's exact test: p = {report['mcnemar_p']:.3g} (alpha {report['alpha']:.3g})",
        f"verdict: {report['verdict']}",
    ]
    if "look" in report:
        lines.insert(-2, look_sentence(report["look"], report["alpha_over_all_looks"]))
    if "promotion" in report:
        done = "promoted: B is now the default" if report["promotion"]["promoted"] else "not promoted"
        lines.append(f"{done}: {report['promotion']['why']}")
        if report["promotion"].get("digits_lost"):
            lines += digit_lines(report["mnist"], report["promotion"]["digits_lost"])
    return "\n".join(lines)


def digit_lines(mnist_result: dict, lost: list[dict]) -> list[str]:
    """Each digit's accuracy on MNIST's test set, A and B, the digits the guard refused marked."""
    a, b = mnist_result["a"]["per_digit"], mnist_result["b"]["per_digit"]
    refused = {str(d["digit"]) for d in lost}
    lines = ["", f"MNIST's test set, per digit{'A':>9}{'B':>10}"]
    for digit in a:
        mark = f"  lost {a[digit] - b[digit]:.2f} points" if digit in refused else ""
        lines.append(f"  {digit}{'':23}{a[digit]:>8.2f} %{b[digit]:>8.2f} %{mark}")
    return lines


def plot(result: dict, out) -> Path:
    """Accuracy of each version, and the images only one of them reads, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [f"A {result['a']['version']}", f"B {result['b']['version']}"]
    accuracies = [result["a"]["accuracy"] or 0, result["b"]["accuracy"] or 0]
    left.bar(names, accuracies, color=["#7f7f7f", "#1f77b4"])
    left.set_ylim(max(0, min(accuracies) - 5), 100)
    left.set_ylabel("accuracy (%)")
    for x, value in enumerate(accuracies):
        left.text(x, value, f"{value:.2f} %", ha="center", va="bottom")
    discordant = [result["only_a_right"], result["only_b_right"]]
    right.bar(["only A right", "only B right"], discordant, color=["#7f7f7f", "#1f77b4"])
    right.set_ylim(0, max(1, *discordant) * 1.2)
    right.set_ylabel("images")
    for x, value in enumerate(discordant):
        right.text(x, value, str(value), ha="center", va="bottom")
    right.set_title(f"McNemar p = {result['mcnemar_p']:.3g}: {result['verdict']}", fontsize=10)
    figure.suptitle(f"{result['paired_images']} images, each to both versions")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
