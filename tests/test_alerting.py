"""The alerts `mnist-kit export monitoring` writes, on a real Prometheus and Alertmanager (deploy/monitoring_drill.py):
a kserve runtime of its own under the kit's load generator, scraped and evaluated every second, Alertmanager
posting to a webhook the test runs. Plain digits fire nothing; a burst of non-digits fires the flag alert within two
evaluation intervals or so; pictures of another kind move the drift score and fire its alert; every panel of the
dashboard has figures."""

import os
import shutil
from contextlib import closing, contextmanager

import numpy as np
import pytest
from conftest import DIGITS
from harness import pad_server

from mnist_kit import constants as C
from mnist_kit.deploy import alerts
from mnist_kit.deploy.monitoring_drill import Drill
from mnist_kit.evaluation import kinds
from mnist_kit.feedback.store import Store
from mnist_kit.packaging import archive
from mnist_kit.training import mnist


@pytest.fixture(scope="module")
def pictures(data_dir) -> dict[str, list[bytes]]:
    """Plain digits (MNIST test digits as PNGs), non-digits of every kind, and digits photographed on paper."""
    images, _ = mnist.load(data_dir, "test")
    rng = np.random.default_rng(38)
    return {
        "plain": [kinds.mnist_png(image.numpy(), None) for image in images[:2000]],
        "non-digits": [kinds.not_a_digit(rng) for _ in range(300)],
        "photos": [kinds.photo_jpeg(image.numpy(), rng) for image in images[2000:2600]],
    }


@pytest.fixture(scope="module")
def watchers():
    """Debian's Prometheus and Alertmanager: in CI a missing one fails the tests, elsewhere they skip saying why."""
    for name in ("prometheus", "prometheus-alertmanager"):
        if not shutil.which(name):
            message = f"{name} not found: scripts/setup.sh installs it (apt-get install {name})"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)


@contextmanager
def pad(tmp_path, url: str):
    """`mnist-kit ui`'s server, its feedback.db holding one correction of a wrong answer (the corrections' panel)."""
    with closing(Store(tmp_path / C.FEEDBACK_DB)) as store:
        store.add(DIGITS[7].read_bytes(), 7, {"digit": 1, "confidence": 0.6})
        with pad_server(url, feedback=store) as server:
            yield f"{C.HOST}:{server.server_address[1]}"


@pytest.fixture(scope="module")
def default_archive(trained_checkpoint, data_dir, tmp_path_factory):
    """The default recipe's model, archived (with its drift baseline): it flags three in four non-digits, where the
    tests' tiny model flags few enough that a burst's share can stay near the alert's 25 %."""
    return archive.build(trained_checkpoint, tmp_path_factory.mktemp("default"), data_dir=data_dir)


@pytest.fixture
def drill(default_archive, watchers, tmp_path):
    with Drill(default_archive, pad=lambda url: pad(tmp_path, url)) as running:
        yield running


def test_plain_digits_fire_nothing_for_longer_than_any_alert_waits(drill, pictures):
    longest = max(a.window + a.wait for a in alerts.ALERTS if a.name != "MnistKitCorrectionsSayWrong")
    phase = drill.phase("plain digits", pictures["plain"], seconds=longest + 2)
    assert phase["failed"] == 0 and phase["sent"] > 1000
    assert drill.firing() == [] and [a for a in drill.webhook.received if a["status"] == "firing"] == []


def test_a_burst_of_non_digits_reaches_the_webhook_within_about_two_intervals(drill, pictures):
    drill.phase("plain digits", pictures["plain"], seconds=5)
    drill.phase("non-digits", pictures["non-digits"], seconds=6)
    took = drill.await_alert("MnistKitFlagSurge", 5)
    print(f"MnistKitFlagSurge reached the webhook {took} s after the burst began")
    # Two 1 s intervals on a quiet machine (the scrape's and the evaluation's phases add up to two more); a CI
    # machine running other tests beside delays scrapes: 5 s is five intervals. scripts/monitoring_drill.py times it.
    assert took is not None and took <= 5.0


def test_photos_of_digits_move_the_drift_score_and_fire_its_alert(drill, pictures):
    drill.phase("plain digits", pictures["plain"], seconds=5)
    drill.phase("photos", pictures["photos"], seconds=12)
    took = drill.await_alert("MnistKitInputDrift", 10)
    print(f"MnistKitInputDrift reached the webhook {took} s after the photos began")
    assert took is not None
    scores = drill.prometheus.query("max by (statistic) (mnist_kit_drift_psi)")
    assert max(float(s["value"][1]) for s in scores) > C.MONITORING_DRIFT_PSI


def test_every_dashboard_panel_has_figures(drill, pictures):
    # Digits, and now and then a body that is no picture: the refusals' counter needs two scrapes in its window.
    drill.phase("plain digits and bad bodies", pictures["plain"][:400] + [b"not an image"] * 20, seconds=8)
    empty = [panel for panel, series in drill.panels().items() if series == 0]
    assert empty == []
