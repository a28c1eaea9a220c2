"""Input drift (mnist_kit/worker/drift.py): the statistics of what the model read, the population stability index
of a window of them against the archive's baseline of MNIST training images, and what moves it: pictures unlike the
training's (photos, rotated phone photos, inverted colours) do, MNIST's own test digits do not."""

import io
import json
import logging
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_kit import constants as C
from mnist_kit.evaluation import kinds
from mnist_kit.packaging import archive
from mnist_kit.training import mnist
from mnist_kit.worker import drift
from mnist_kit.worker.core import Core


def rows_of(values: dict) -> np.ndarray:
    """Rows of STATISTICS with the given columns (the others 0)."""
    n = len(next(iter(values.values())))
    rows = np.zeros((n, len(drift.STATISTICS)))
    for name, column in values.items():
        rows[:, drift.STATISTICS.index(name)] = column
    return rows


def drawn(*boxes: tuple[slice, slice, int]) -> np.ndarray:
    pixels = np.zeros((C.IMAGE_SIZE, C.IMAGE_SIZE), dtype=np.uint8)
    for rows, cols, value in boxes:
        pixels[rows, cols] = value
    return pixels


@pytest.mark.unit
def test_the_psi_of_the_same_shares_is_zero_and_of_two_samples_of_one_distribution_near_zero():
    rng = np.random.default_rng(0)
    baseline = drift.Baseline.of(rows_of({"ink_share": rng.normal(size=2000)}))
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0
    assert baseline.scores(rows_of({"ink_share": rng.normal(size=1000)}))["ink_share"] < 0.05


@pytest.mark.unit
def test_the_psi_grows_with_a_shift_large_past_a_quarter_once_shifted_by_the_spread():
    rng = np.random.default_rng(0)
    baseline = drift.Baseline.of(rows_of({"ink_share": rng.normal(size=2000)}))
    slightly, wholly, far = [
        baseline.scores(rows_of({"ink_share": rng.normal(shift, size=1000)}))["ink_share"] for shift in (0.1, 1, 2)
    ]
    assert slightly < 0.1 and 0.25 < wholly < far


@pytest.mark.unit
def test_an_empty_bin_counts_as_epsilon_so_the_psi_stays_finite():
    score = drift.psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5])
    expected = 2 * (0.5 - C.DRIFT_EPSILON) * np.log(0.5 / C.DRIFT_EPSILON)
    assert np.isfinite(score) and score == pytest.approx(expected)


@pytest.mark.unit
def test_quantile_bins_share_the_baseline_evenly_and_the_digits_and_confidence_have_fixed_ones():
    rng = np.random.default_rng(0)
    rows = rows_of({"stroke_width": rng.uniform(1, 3, 2000), "digit": rng.integers(0, 10, 2000)})
    baseline = drift.Baseline.of(rows)
    assert len(baseline.cuts["stroke_width"]) == C.DRIFT_BINS - 1
    assert np.allclose(baseline.shares["stroke_width"], 1 / C.DRIFT_BINS, atol=0.001)
    assert baseline.cuts["digit"] == [d + 0.5 for d in range(9)] and len(baseline.shares["digit"]) == 10
    assert baseline.cuts["confidence"] == list(C.DRIFT_CONFIDENCE_CUTS)


@pytest.mark.unit
def test_a_solid_bar_has_its_share_of_ink_no_faint_edge_and_its_width():
    bar = drawn((slice(4, 24), slice(12, 16), 255))  # 20 tall, 4 wide
    (row,) = drift.statistics(np.stack([bar]), [1], [0.75])
    ink_share, faint_share, stroke_width, confidence, digit = row
    assert ink_share == 80 / 784 and faint_share == 0
    assert stroke_width == pytest.approx(2 * 80 / (2 * (20 + 4)))  # 3.33: a short bar's ends count too
    assert (confidence, digit) == (0.75, 1)


@pytest.mark.unit
def test_a_soft_edge_is_faint_ink_and_a_thin_line_is_narrower_than_a_thick_one():
    soft = drawn((slice(4, 24), slice(11, 17), 40), (slice(4, 24), slice(12, 16), 255))  # 2 faint columns
    thin, thick = drawn((slice(4, 24), slice(14, 15), 255)), drawn((slice(4, 24), slice(11, 17), 255))
    rows = drift.statistics(np.stack([soft, thin, thick]), [0, 0, 0], [1, 1, 1])
    faint, width = drift.STATISTICS.index("faint_share"), drift.STATISTICS.index("stroke_width")
    assert rows[0, faint] == pytest.approx(40 / 120)
    assert rows[1, width] < 1 < 2 < rows[2, width]


@pytest.mark.unit
def test_the_window_keeps_the_last_pictures_however_they_come():
    window = drift.Window(5)
    window.add(rows_of({"digit": [1, 2, 3]}))
    assert len(window) == 3
    window.add(rows_of({"digit": [4, 5, 6, 7]}))
    assert len(window) == 5 and sorted(window.values()[:, -1]) == [3, 4, 5, 6, 7]
    window.add(rows_of({"digit": range(10, 22)}))
    assert sorted(window.values()[:, -1]) == [17, 18, 19, 20, 21]


@pytest.mark.unit
def test_scores_are_due_once_enough_pictures_came_and_at_most_once_an_interval():
    baseline = drift.Baseline.of(rows_of({"digit": np.arange(100) % 10}))
    tracked = drift.Drift(baseline, 50, 20, interval=3600)
    pixels = [drawn((slice(4, 24), slice(12, 16), 255))] * 10
    tracked.add(pixels, list(range(10)), [1.0] * 10)
    assert not tracked.due()  # 10 pictures: fewer than 20
    tracked.add(pixels, list(range(10)), [1.0] * 10)
    assert tracked.due()
    scores = tracked.scores()
    assert set(scores) == set(drift.STATISTICS) and scores["digit"] == pytest.approx(0) and len(tracked.window) == 20
    tracked.add(pixels, list(range(10)), [1.0] * 10)
    assert not tracked.due()  # within the interval


@pytest.mark.unit
def test_pictures_kept_between_two_scores_are_the_newest_window_at_most():
    tracked = drift.Drift(drift.Baseline.of(rows_of({"digit": np.arange(100) % 10})), 50, 20)
    for digit in range(30):
        tracked.add([drawn((slice(4, 24), slice(12, 16), 255))] * 10, [digit % 10] * 10, [1.0] * 10)
    tracked.scores()
    assert len(tracked.window) == 50 and set(tracked.window.values()[:, -1]) == {5, 6, 7, 8, 9}


@pytest.mark.unit
def test_a_baseline_survives_its_json_and_an_archive_without_one_has_none(tmp_path, caplog):
    rng = np.random.default_rng(0)
    baseline = drift.Baseline.of(rows_of({"ink_share": rng.uniform(size=300), "digit": rng.integers(0, 10, 300)}))
    (tmp_path / C.DRIFT_BASELINE_FILE).write_text(baseline.to_json())
    assert drift.Baseline.load(tmp_path) == baseline
    assert drift.Baseline.load(tmp_path / "nothing") is None
    (tmp_path / C.DRIFT_BASELINE_FILE).write_text('{"statistics": ')
    with caplog.at_level(logging.WARNING):
        assert drift.Baseline.load(tmp_path) is None
    assert "no drift figures" in caplog.text


@pytest.mark.unit
def test_an_eager_archive_without_the_mnist_files_carries_no_baseline_and_says_so(untrained_checkpoint, tmp_path):
    said = []
    built = archive.build(untrained_checkpoint, tmp_path, mode="eager", data_dir=tmp_path / "nothing", log=said.append)
    assert C.DRIFT_BASELINE_FILE not in zipfile.ZipFile(built).namelist()
    assert any(line.startswith("no drift baseline: the MNIST training images are missing") for line in said)


# What moves it: an archive's baseline against pictures sent as people send them. In the unit tier on untrained
# weights (the pixels' statistics are no model's, and the answers' are read by the same weights on both sides); with
# the tiny trained model for the kinds that take long to make (photos) and for what only a model's answers show.


def archived(checkpoint, data_dir, folder) -> tuple:
    """An eager archive's unpacked folder and a core on it, as the kserve runtime loads them."""
    built = archive.build(checkpoint, folder, mode="eager", data_dir=data_dir)
    unpacked = folder / "unpacked"
    zipfile.ZipFile(built).extractall(unpacked)
    model = json.loads((unpacked / "MAR-INF/MANIFEST.json").read_text())["model"]
    threads = torch.get_num_threads()  # the eager form sets one, as a worker runs: pytest's process keeps its own
    core = Core(str(unpacked), model, serving_form="eager-fp32")
    torch.set_num_threads(threads)
    return drift.Baseline.load(unpacked), core


@pytest.fixture(scope="module")
def untrained(untrained_checkpoint, data_dir, tmp_path_factory):
    return archived(untrained_checkpoint, data_dir, tmp_path_factory.mktemp("untrained_archive"))


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint, data_dir, tmp_path_factory):
    return archived(tiny_checkpoint, data_dir, tmp_path_factory.mktemp("tiny_archive"))


@pytest.fixture(scope="module")
def test_digits(data_dir):
    images, labels = mnist.load(data_dir, "test", download=False)
    return images.numpy(), labels.numpy()


def scores(served: tuple, pictures: list[bytes]) -> dict[str, float]:
    """The PSIs of what the core read and answered for `pictures`, as the runtime's window would hold them."""
    baseline, core = served
    batch = core.infer(core.decode([{"body": p} for p in pictures], [{}] * len(pictures)))
    read = [picture.pixels for request in batch.requests for picture in request.images]
    top = [max(a.probabilities) for a in batch.answers]
    digits = [a.probabilities.index(t) for a, t in zip(batch.answers, top)]
    return baseline.scores(drift.statistics(np.stack(read), digits, top))


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def sample(test_digits, size: int = C.DRIFT_WINDOW) -> np.ndarray:
    images, _ = test_digits
    return images[np.random.default_rng(0).choice(len(images), size, replace=False)]


@pytest.mark.unit
def test_the_archive_carries_the_baseline_of_its_training_images_binned(untrained):
    baseline, _ = untrained
    assert baseline.pictures == C.DRIFT_BASELINE_IMAGES and set(baseline.cuts) == set(drift.STATISTICS)
    assert all(sum(shares) == pytest.approx(1) for shares in baseline.shares.values())


@pytest.mark.unit
def test_mnist_test_digits_sent_as_png_keep_every_psi_under_a_tenth(untrained, test_digits):
    found = scores(untrained, [png(image) for image in sample(test_digits)])
    assert max(found.values()) < 0.1, found


@pytest.mark.unit
def test_inverted_colours_lose_the_pens_soft_edges_past_a_quarter(untrained, test_digits):
    """Dark ink on white: the preprocessing turns it back to MNIST's polarity, all but the soft edges it cleans off."""
    found = scores(untrained, [png(255 - image) for image in sample(test_digits)])
    assert found["faint_share"] > 0.25, found


def test_the_trained_models_answers_on_mnist_test_digits_keep_every_psi_under_a_tenth(tiny, test_digits):
    found = scores(tiny, [png(image) for image in sample(test_digits)])
    assert max(found.values()) < 0.1, found


@pytest.mark.parametrize("kind", ["photo", "rotated", "not_digit/pen letter"])
def test_photos_rotated_photos_and_letters_push_a_psi_over_a_quarter(tiny, test_digits, kind):
    images, labels = test_digits
    made = kinds.make(images, labels, per_kind=C.DRIFT_MIN_PICTURES, kinds=(kind,))
    found = scores(tiny, [sent for _, _, sent in made])
    assert max(found.values()) > 0.25, found
    if kind.startswith("not_digit"):  # letters read as no digit: the answers show it
        assert found["confidence"] > 0.25, found
