"""`mnist-kit train --feedback` and `--extra DIR`: fine-tuning the current weights on MNIST and the corrections, the
old weights kept beside the new, the metrics before and after; and the whole loop with a simulated user (slow)."""

import hashlib
import json
import math
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import DIGITS, ROOT
from harness import recording_server

from mnist_kit import constants as C
from mnist_kit.cli import cli
from mnist_kit.feedback import ab
from mnist_kit.feedback.store import Store, labelled_folder
from mnist_kit.packaging import archive
from mnist_kit.training import mnist
from mnist_kit.training.finetune import read, split


@pytest.fixture
def home(tiny_checkpoint, tmp_path):
    """A kit's home with the tiny model as its checkpoint and three corrections in its feedback database."""
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(tiny_checkpoint, tmp_path / C.CHECKPOINT)
    store = Store(tmp_path / C.FEEDBACK_DB)
    for digit in (3, 5, 8, 8, 9):
        store.add(DIGITS[digit].read_bytes(), digit, {"digit": 1, "confidence": 0.5, "version": "1.0"})
    store.close()
    return tmp_path


def train(home, data_dir, *args):
    env = {C.HOME_ENV: str(home), C.DATA_DIR_ENV: str(data_dir)}
    return CliRunner().invoke(cli, ["train", "--limit", "1024", "--epochs", "1", "--json", *args], env=env)


def test_train_feedback_fine_tunes_the_checkpoint_and_keeps_the_old_weights_beside_it(home, data_dir):
    before = (home / C.CHECKPOINT).read_bytes()
    result = train(home, data_dir, "--feedback")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    [kept] = [p for p in (home / "checkpoints").glob("mnist_sd.*.pt")]
    assert kept.read_bytes() == before and (home / C.CHECKPOINT).read_bytes() != before
    feedback = metrics["feedback"]
    assert (feedback["corrections"], feedback["trained_on"], feedback["held_out"]) == (5, 4, 1)
    assert set(feedback["before"]) == set(feedback["after"]) == {"mnist_test", "held_out"}
    finetune = Store(home / C.FEEDBACK_DB).finetunes()[feedback["finetune"]]
    assert finetune["images"] == 4 and finetune["weights_sha256"] == feedback["weights_sha256"]
    assert metrics["init"] == str(kept) and metrics["extra_images"] == 4
    assert json.loads((home / "checkpoints" / "metrics.json").read_text())["feedback"] == feedback


def test_train_extra_reads_a_folder_as_feedback_export_writes_it(home, data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    exported = CliRunner().invoke(cli, ["feedback", "--db", str(home / C.FEEDBACK_DB), "export", str(folder)])
    assert exported.exit_code == 0
    result = train(home, data_dir, "--extra", str(folder))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["feedback"]["corrections"] == 5


def test_train_feedback_without_a_checkpoint_says_to_train_first(tmp_path, data_dir):
    Store(tmp_path / C.FEEDBACK_DB).add(DIGITS[3].read_bytes(), 3)
    result = train(tmp_path, data_dir, "--feedback")
    assert result.exit_code == 1 and "fine-tuning starts from a trained model (mnist-kit train)" in result.output


def test_ab_on_the_corrections_scores_none_of_what_two_fine_tunes_trained_on(tiny_checkpoint, data_dir, tmp_path):
    """The issue's scripted check. 100 corrections; fine-tune 1 on all of them (`--feedback`, seed 1: 80 trained,
    20 held out); fine-tune 2 on an export of the first 50 (`--extra`, seed 2: 40 trained). `ab --set feedback`
    sends exactly the corrections neither trained on, and says how many it left out."""
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(tiny_checkpoint, tmp_path / C.CHECKPOINT)
    images, labels = mnist.load(data_dir, "test")
    pairs = [(ab.png(images[i].numpy()), int(labels[i])) for i in range(100)]
    store = Store(tmp_path / C.FEEDBACK_DB)
    ids = [store.add(data, label) for data, label in pairs]
    folder = tmp_path / "first-half"
    Store(tmp_path / C.FEEDBACK_DB).export(folder)
    for path in folder.glob("*.png"):
        if int(path.stem.split("-")[1]) > ids[49]:
            path.unlink()

    trained = set()
    for args, seed, chosen in (("--feedback",), 1, pairs), (("--extra", str(folder)), 2, labelled_folder(folder)):
        result = train(tmp_path, data_dir, *args, "--seed", str(seed))
        assert result.exit_code == 0, result.output
        _, _, kept = read(chosen)
        train_indices, _ = split(len(kept), C.FEEDBACK_HOLDOUT, seed)
        trained |= {hashlib.sha256(chosen[kept[i]][0]).hexdigest() for i in train_indices}
    held_out = {hashlib.sha256(data).hexdigest() for data, _ in pairs} - trained
    assert 0 < len(held_out) < 20

    with recording_server() as server:
        env = {C.HOME_ENV: str(tmp_path), C.DATA_DIR_ENV: str(data_dir)}
        args = ["ab", "--a", "1.0", "--b", "2.0", "--url", server.url, "--set", "feedback", "--json"]
        result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert set(server.seen) == held_out and len(server.seen) == 2 * len(held_out)
    report = json.loads(result.output[result.output.index("{") :])
    assert report["left_out"] == {"trained on by fine-tune 1, 2": 100 - len(held_out)}


# The promotion rule (docs/FEEDBACK.md, `ab --promote`), stated here so that the loop's decision is checked against it
# rather than against the function that made it: B becomes the default only when it is shown better on the set,
# answers no more images with an error than A on the set and on MNIST's test set, and on MNIST's test set loses at
# most PROMOTION_MARGIN points against A in all, and at most DIGIT_MARGIN points on the images of any one digit, and
# is not shown worse.
PROMOTION_MARGIN = 0.1
DIGIT_MARGIN = 1.0
ALPHA = 0.01  # `ab --alpha`'s default: the loop's verdicts are first looks at their images
MIN_PAIRED = 100  # fewer paired images get no verdict


def mcnemar_p(wins: int, losses: int) -> float:
    """McNemar's exact two-sided p: the chance of a split of the discordant pairs at least this uneven, were each
    as likely to go either way."""
    n = wins + losses
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n) if n else 1.0


def shown_better(result: dict, side: str) -> bool:
    """`side` ("a" or "b") read more of the images only one side read, at p < ALPHA (from the counts themselves)."""
    wins, losses = result[f"only_{side}_right"], result[f"only_{'a' if side == 'b' else 'b'}_right"]
    return result["paired_images"] >= MIN_PAIRED and wins > losses and mcnemar_p(wins, losses) < ALPHA


def within_the_margin_on_each_digit(on_mnist: dict) -> bool:
    """B's accuracy on each digit's MNIST test images (the run's per-digit figures) at most DIGIT_MARGIN below A's."""
    a, b = on_mnist["a"]["per_digit"], on_mnist["b"]["per_digit"]
    return set(a) == set(b) == {str(d) for d in range(10)} and all(a[d] - b[d] <= DIGIT_MARGIN for d in a)


def promoted_by_the_rule(on_set: dict, on_mnist: dict, *, per_digit: bool = True) -> bool:
    """The rule; with per_digit=False, all of it but the guard per digit (for a report that has no figures per
    digit, which only a run made before the guard existed lacks)."""
    return (
        shown_better(on_set, "b")
        and all(r["b"]["errors"] <= r["a"]["errors"] for r in (on_set, on_mnist))
        and on_mnist["a"]["accuracy"] - on_mnist["b"]["accuracy"] <= PROMOTION_MARGIN
        and not shown_better(on_mnist, "a")
        and (not per_digit or within_the_margin_on_each_digit(on_mnist))
    )


def test_the_promotion_rule_stated_here_gives_the_documented_runs_decision():
    """The rule above against docs/FEEDBACK.md's measured loop (2.0 promoted): the statement is the kit's rule.
    That run (issue 22) was made before the guard per digit, and its report has no accuracy per digit: the guard
    cannot be evaluated on it, so the rest of the rule is checked, and the file is checked to lack them (a run
    measured again carries them, and this test then needs the whole rule)."""
    report = json.loads((ROOT / "docs" / "feedback" / "amd-epyc-avx512.json").read_text())
    assert "per_digit" not in report["ab_mnist"]["a"] and "per_digit" not in report["ab_mnist"]["b"]
    decision = promoted_by_the_rule(report["ab_other_half"], report["ab_mnist"], per_digit=False)
    assert decision is report["promoted"] is True


@pytest.mark.slow
def test_the_simulated_users_corrections_halve_the_error_on_digits_nothing_was_trained_on(
    trained_checkpoint, data_dir, tmp_path
):
    """The issue's target, with the default model: scripts/feedback_loop.py corrects the misread UCI digits of one
    half through /api/feedback, fine-tunes, archives 2.0, and A/B-tests both served versions on the other half.
    Whether 2.0 is then promoted depends on its staying within 0.1 points of 1.0 on MNIST as served, a margin of the
    order of what each version's int8 form moves its accuracy (up to 0.05 points either way), and within 1 point on
    each digit's images: the test checks that the decision is the promotion rule's (promoted_by_the_rule, the guard
    per digit included), applied to the run's own figures, not that it promotes."""
    store = tmp_path / "store"
    archive.build(trained_checkpoint, store, data_dir=data_dir)
    out = tmp_path / "loop.json"
    argv = [sys.executable, "scripts/feedback_loop.py", "--checkpoint", str(trained_checkpoint)]
    argv += ["--archive", str(store / "mnist.mar"), "--data-dir", str(data_dir), "--out", str(out)]
    subprocess.run(argv, cwd=ROOT, check=True, timeout=1500)
    report = json.loads(out.read_text())
    rates = report["error_rate_other_half"]
    assert rates["2.0"] <= rates["1.0"] / 2 and report["ab_other_half"]["mcnemar_p"] < 0.01
    assert report["ab_mnist"]["b"]["accuracy"] >= 99.3
    promoted = promoted_by_the_rule(report["ab_other_half"], report["ab_mnist"])
    assert report["promoted"] is promoted and report["default_version"] == ("2.0" if promoted else "1.0")
