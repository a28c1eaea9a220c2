"""What one pod asks for: cores, memory and the autoscaling target, from what `mnist-kit bench` measured (and saying
so), else KServe's TorchServe runtime defaults."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from mnist_kit import constants as C
from mnist_kit.errors import KitError


class DeployError(KitError):
    """The export cannot be written; the message says why."""


@dataclass(frozen=True)
class Resources:
    """What one pod asks for (and is limited to: requests equal limits, Kubernetes' Guaranteed class), one
    TorchServe worker per core, and where the figures come from."""

    cpus: int
    memory_mib: int
    scale_target: int
    source: str

    def kubernetes(self) -> dict:
        amounts = {"cpu": str(self.cpus), "memory": f"{self.memory_mib}Mi"}
        return {"requests": dict(amounts), "limits": dict(amounts)}


def resources(bench_report=None, *, cpus=None, memory_mib=None, scale_target=None) -> Resources:
    """Pod resources from a `mnist-kit bench` report: as many cores as the bench's workers (one per core, each
    on one thread) and its measured server memory with headroom; the autoscaling target is the smallest
    concurrency that reached most of the best throughput. Without a report, KServe's runtime defaults.
    Explicit values win over both."""
    bench = None
    if bench_report is not None and Path(bench_report).is_file():
        try:
            bench = json.loads(Path(bench_report).read_text())
            measured_cpus = int(bench["settings"]["workers"])
            sweep = bench["kit"]["sweep"]
            best = max(point["req_per_s"] for point in sweep)
            target = min(p["concurrency"] for p in sweep if p["req_per_s"] >= C.SCALE_THROUGHPUT_SHARE * best)
            memory = float(bench["kit"].get("memory_mib") or 0)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DeployError(f"{bench_report} is not a report of mnist-kit bench ({e})") from None
    if bench is None:
        source = (
            f"no bench report ({bench_report or 'none given'}): KServe's TorchServe runtime defaults, "
            f"{C.DEFAULT_CPUS} CPU and {C.DEFAULT_MEMORY_MIB}Mi"
        )
        derived = Resources(C.DEFAULT_CPUS, C.DEFAULT_MEMORY_MIB, C.DEFAULT_SCALE_TARGET, source)
    else:
        derived_memory = _round_up(memory * C.MEMORY_HEADROOM, C.MEMORY_STEP_MIB) if memory else C.DEFAULT_MEMORY_MIB
        memory_note = (
            f"server memory {memory:.0f} MiB measured × {C.MEMORY_HEADROOM}"
            if memory
            else f"no memory in the report (an older bench): {C.DEFAULT_MEMORY_MIB}Mi"
        )
        machine = bench.get("machine", {})
        source = (
            f"{bench_report}: {measured_cpus} workers on {machine.get('cpus', '?')} cores of "
            f"{machine.get('cpu', 'an unnamed CPU')} served {best:.0f} req/s at best; {memory_note}; "
            f"autoscaling at {target} concurrent requests ({C.SCALE_THROUGHPUT_SHARE:.0%} of the best throughput)"
        )
        derived = Resources(measured_cpus, derived_memory, target, source)
    overrides = {
        name: value
        for name, value in (("cpus", cpus), ("memory_mib", memory_mib), ("scale_target", scale_target))
        if value is not None
    }
    if not overrides:
        return derived
    given = ", ".join(f"{name} {value}" for name, value in overrides.items())
    return Resources(**{**derived.__dict__, **overrides, "source": f"given: {given}; the rest from {derived.source}"})


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)
