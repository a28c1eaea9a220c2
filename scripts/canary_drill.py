#!/usr/bin/env python
"""Issue 37's three canary scenarios at once (mnist_kit/feedback/canary_drill.py): each candidate made from the
default's checkpoint, then `mnist-kit canary run` on a real kserve runtime under load, the shadow's disagreements
labelled by a script; each decision with its figures in a JSON report, and the stages drawn.

    python scripts/canary_drill.py [--checkpoint checkpoints/mnist_sd.pt] [--archive model_store/mnist.mar]
        [--out docs/canary/CPU.json] [--plot docs/canary.png]
    python scripts/canary_drill.py --replot docs/canary/CPU.json --plot docs/canary.png   # the picture again

Works in temporary folders: the kit's own home, checkpoint and model store are left as they are.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.bench.report import machine
from mnist_kit.feedback import canary_drill
from mnist_kit.files import write_json
from mnist_kit.training import mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=C.CHECKPOINT, help="The default's weights (`mnist-kit train`).")
    parser.add_argument("--archive", default=f"{C.MODEL_STORE}/{C.MODEL_NAME}.mar", help="The default, archived.")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path(C.REPORTS) / "canary_drill.json")
    parser.add_argument("--plot", type=Path, default=Path(C.REPORTS) / "canary_drill.png")
    parser.add_argument("--scenarios", default=",".join(canary_drill.SCENARIOS), help="Which, comma-separated.")
    parser.add_argument("--replot", type=Path, default=None, help="Only draw an earlier report's drills again.")
    args = parser.parse_args()
    if args.replot:
        print(f"wrote {canary_drill.plot(json.loads(args.replot.read_text())['drills'], args.plot)}")
        return
    data_dir = args.data_dir or mnist.default_data_dir()
    traffic = canary_drill.traffic(data_dir)
    drills = {}
    for scenario in args.scenarios.split(","):
        print(f"{scenario}: {canary_drill.SCENARIOS[scenario]}", flush=True)
        with tempfile.TemporaryDirectory(prefix="mnist-kit-drill-") as home:
            made = canary_drill.candidate(scenario, args.checkpoint, data_dir, home=Path(home))
            drills[scenario] = canary_drill.drill(args.archive, made, traffic, home=Path(home), data_dir=data_dir)
        for decision in drills[scenario]["decisions"]:
            print(f"  [{decision['stage']}] {decision['decision']}: {decision['reason']}", flush=True)
    report = {
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "traffic": f"{len(traffic)} pictures of {canary_drill.KIND.__name__} digits from MNIST's test set",
        "run_options": list(canary_drill.RUN_OPTIONS),
        "drills": drills,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    print(f"wrote {args.out} and {canary_drill.plot(drills, args.plot)}")


if __name__ == "__main__":
    main()
