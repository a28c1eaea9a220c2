"""The CPU a figure was measured on, recorded beside every figure the kit writes (bench, evaluate, image measure,
the scripts' reports): the host is shared and its CPU varies between sessions."""

import os
import platform
from pathlib import Path

# The instruction sets that decide which kernels PyTorch runs, by their /proc/cpuinfo flag.
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
}


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}


def cpu() -> dict:
    """The CPU a figure was measured on: its model, the instruction sets that matter here, its cores."""
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "isa": [name for flag, name in ISA_FLAGS.items() if flag in flags],
        "cpus": os.cpu_count(),
    }
