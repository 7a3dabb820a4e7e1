"""Distance to the hardware's limit: the model's FLOPs per training image and the CPU's float32 peak.

Used by bench_training.py; ``python benchmarks/flops.py`` prints both for this machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_lit.model import MNISTClassifier

#: float32 FLOPs per cycle per core by vector instruction set: 2 FMA units x lanes x 2 (an FMA is a multiply
#: and an add). AVX-512: 16 float32 lanes; AVX2: 8. (Intel's and AMD's optimisation manuals; a core with one
#: 512-bit FMA unit peaks at half the AVX-512 figure; Zen 4 is detected: :func:`is_zen4`.)
FLOPS_PER_CYCLE = {"AVX512": 2 * 16 * 2, "AVX2": 2 * 8 * 2, "DEFAULT": 2 * 4 * 2}


def flops_per_image(batch_size: int = 128) -> dict[str, float]:
    """FLOPs of one training step per image (forward + backward, cross-entropy loss), counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` on a batch of ``batch_size`` uint8 images.
    The counter counts convolutions and matrix products (2 FLOPs per multiply-add); pooling, ReLU,
    dropout and the optimizer's elementwise update are not counted (a few percent at most here)."""
    model = MNISTClassifier()
    model.train()
    images = torch.randint(0, 256, (batch_size, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as forward_counter:
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
    with FlopCounterMode(display=False) as backward_counter:
        loss.backward()
    forward, backward = forward_counter.get_total_flops(), backward_counter.get_total_flops()
    return {
        "forward": forward / batch_size,
        "backward": backward / batch_size,
        "total": (forward + backward) / batch_size,
    }


def cpu_clock_ghz() -> tuple[float, str]:
    """(GHz, where it came from): the highest ``cpu MHz`` in /proc/cpuinfo (the current clock of each CPU,
    which a VM often reports as the nominal one), else 0 with the reason."""
    try:
        with open("/proc/cpuinfo") as info:
            mhz = [float(line.split(":")[1]) for line in info if line.startswith("cpu MHz")]
    except OSError as err:
        return 0.0, f"no /proc/cpuinfo ({err.strerror})"
    if not mhz:
        return 0.0, "no 'cpu MHz' in /proc/cpuinfo"
    return max(mhz) / 1000, "/proc/cpuinfo 'cpu MHz' (current clock; turbo may be higher)"


def first_cpu_fields(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The ``key: value`` lines of the first processor in ``cpuinfo`` (``vendor_id``, ``cpu family``, ``model
    name``, ``flags``, ...); empty when it cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as info:
            block = info.read().split("\n\n")[0]
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def is_zen4() -> bool:
    """True on an AMD family-25 CPU with AVX-512 (Zen 4): it runs each 512-bit FMA as two 256-bit halves on its
    two 256-bit FMA units (AMD's Zen 4 software optimisation guide), so its float32 peak is the AVX2 figure."""
    fields = first_cpu_fields()
    return (
        fields.get("vendor_id") == "AuthenticAMD"
        and fields.get("cpu family") == "25"
        and "avx512f" in fields.get("flags", "").split()
    )


def peak_flops(cores: int | None = None) -> dict[str, object]:
    """The float32 peak of ``cores`` cores (default: torch's intra-op threads): cores x clock x FLOPs/cycle,
    FLOPs/cycle from :data:`FLOPS_PER_CYCLE` for ``torch.backends.cpu.get_cpu_capability()`` (AVX-512 on Zen 4
    counts as AVX2: :func:`is_zen4`)."""
    cores = cores or torch.get_num_threads()
    capability = torch.backends.cpu.get_cpu_capability()
    isa = "AVX512" if capability.startswith("AVX512") else capability if capability in FLOPS_PER_CYCLE else "DEFAULT"
    halves = isa == "AVX512" and is_zen4()
    per_cycle = FLOPS_PER_CYCLE["AVX2" if halves else isa]
    units = "2 units of 256 bits (Zen 4 splits each 512-bit op in two)" if halves else "2 units"
    ghz, source = cpu_clock_ghz()
    return {
        "peak": cores * ghz * 1e9 * per_cycle,
        "cores": cores,
        "ghz": ghz,
        "clock_source": source,
        "per_cycle": per_cycle,
        "capability": capability,
        "formula": f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({isa} FMA: {units} x "
        f"{per_cycle // 4} float32 x 2) = {cores * ghz * per_cycle:.1f} GFLOP/s",
    }


if __name__ == "__main__":
    counts = flops_per_image()
    peak = peak_flops()
    print(
        f"FLOPs per training image: forward {counts['forward'] / 1e6:.2f} M + backward "
        f"{counts['backward'] / 1e6:.2f} M = {counts['total'] / 1e6:.2f} M"
    )
    print(
        f"float32 peak ({os.cpu_count()} CPUs, torch {torch.get_num_threads()} threads, clock from "
        f"{peak['clock_source']}): {peak['formula']}"
    )
