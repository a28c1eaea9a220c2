#!/usr/bin/env python
"""The monitoring drill at full length (mnist_kit/deploy/monitoring_drill.py): a kserve runtime under load, a real
Prometheus evaluating `mnist-kit export monitoring`'s rules every second and a real Alertmanager posting to a
webhook; phases of plain digits, a burst of non-digits and digits photographed on paper. It writes when each alert
reached the webhook, per phase, and draws every dashboard panel from Prometheus's own figures, as Grafana would show
them (Grafana is not packaged here).

    python scripts/monitoring_drill.py [--archive model_store/mnist.mar] [--out docs/monitoring/CPU.json]
        [--plot docs/monitoring.png]
"""

import argparse
import sys
import tempfile
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np

from mnist_kit import constants as C
from mnist_kit.bench.report import machine
from mnist_kit.deploy import alerts, dashboard
from mnist_kit.deploy.monitoring_drill import INTERVAL, Drill
from mnist_kit.evaluation import kinds
from mnist_kit.feedback.store import Store
from mnist_kit.files import write_json
from mnist_kit.training import mnist
from mnist_kit.ui.pad_client import Reader
from mnist_kit.ui.server import PadServer

PHASES = (("plain digits", "plain", 20), ("non-digits", "non-digits", 10), ("plain digits", "plain", 20))
PHASES += (("photos of digits", "photos", 25), ("plain digits", "plain", 15))


@contextmanager
def pad(url: str):
    """`mnist-kit ui`'s server in a thread, with one correction saying the model was wrong."""
    with tempfile.TemporaryDirectory() as folder, closing(Store(Path(folder) / C.FEEDBACK_DB)) as store:
        store.add(Path("examples/digits/7.png").read_bytes(), 7, {"digit": 1, "confidence": 0.6})
        server = PadServer(Reader(url, C.MODEL_NAME, url), port=0, feedback=store)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        try:
            yield f"{C.HOST}:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def plot(panels: list[tuple[str, list]], phases: list[dict], fired: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = phases[0]["began_at"]
    columns = 3
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(15, 3 * rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels):
        for s in series[:12]:
            t = [float(v[0]) - start for v in s["values"]]
            ax.plot(t, [float(v[1]) for v in s["values"]], linewidth=1, label=",".join(s["metric"].values())[:30])
        for phase in phases:
            if phase["name"] != "plain digits":
                ax.axvspan(phase["began_at"] - start, phase["ended_at"] - start, color="0.9", zorder=0)
        for alert in fired:
            ax.axvline(alert["at_unix"] - start, color="tab:red", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        if series and len(series) <= 6:
            ax.legend(fontsize=6)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "The dashboard's queries from the drill's Prometheus (grey: non-digits, then photos; red: an alert reached "
        "the webhook); seconds since the drill began",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=f"{C.MODEL_STORE}/{C.MODEL_NAME}.mar")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path(C.REPORTS) / "monitoring_drill.json")
    parser.add_argument("--plot", type=Path, default=Path(C.REPORTS) / "monitoring_drill.png")
    args = parser.parse_args()
    images, _ = mnist.load(args.data_dir or mnist.default_data_dir(), "test")
    rng = np.random.default_rng(38)
    pictures = {
        "plain": [kinds.mnist_png(image.numpy(), None) for image in images[:3000]],
        "non-digits": [kinds.not_a_digit(rng) for _ in range(400)],
        "photos": [kinds.photo_jpeg(image.numpy(), rng) for image in images[3000:4000]],
    }
    with Drill(args.archive, pad=pad) as drill:
        offset = time.time() - time.monotonic()
        for name, kind, seconds in PHASES:
            phase = drill.phase(name, pictures[kind], seconds=seconds)
            print(f"{name}: {phase['sent']} sent, {phase['failed']} refused or failed; firing: {drill.firing()}")
        fired = [{**a, "at_unix": a["at"] + offset} for a in drill.webhook.received if a["status"] == "firing"]
        # Each alert that began firing in a phase: its first arrival, seconds after the phase began (a notification
        # repeating an alert that fired in an earlier phase is not counted again).
        per_phase = []
        for phase, until in zip(drill.phases, [p["began_at"] for p in drill.phases[1:]] + [float("inf")]):
            first = {}
            for alert in fired:
                if phase["began_at"] <= alert["began_at"] < until and alert["alertname"] not in first:
                    first[alert["alertname"]] = round(alert["at"] - phase["began"], 2)
            per_phase.append({k: phase[k] for k in ("name", "sent", "failed")} | {"alerts_after_s": first})
        start, end = drill.phases[0]["began_at"], drill.phases[-1]["ended_at"]
        queries = dashboard.queries(alerts.seconds(INTERVAL))
        panels = [(title, drill.prometheus.query_range(query, start, end)) for title, query in queries]
    report = {
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "interval": INTERVAL,
        "phases": per_phase,
        "panels_with_figures": {title: len(series) for title, series in panels},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    for phase in per_phase:
        print(f"{phase['name']}: {phase['alerts_after_s'] or 'no alert'}")
    print(f"wrote {args.out} and {plot(panels, drill.phases, fired, args.plot)}")


if __name__ == "__main__":
    main()
