"""Which ``--trainer.precision`` values this model trains with, checked before a run starts.

Measured with ``configs/mnist.yaml`` on the real 10k subset (CPU): 32-true, 64-true, bf16-true,
16-mixed and bf16-mixed train. 16-true (float16 weights, no loss scaling) gave ``val_loss=nan``
after 3 steps, and the run then stopped in a plotting callback with a traceback. The ``transformer-engine`` precisions
need NVIDIA's ``transformer_engine`` package (GPUs only); without it Lightning raised
``ModuleNotFoundError`` with a traceback.
"""

from __future__ import annotations

import importlib.util

from lightning.pytorch.utilities.exceptions import MisconfigurationException

#: The values this model trains with (Lightning's spellings and short aliases); ``None`` is Lightning's default, 32-true.
SUPPORTED_PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-true", "16-mixed", "16", "bf16-mixed", "bf16")


def check_precision(precision: object) -> None:
    """Refuse a ``--trainer.precision`` this model cannot train with, in one line naming the ones it can.

    Raises:
        MisconfigurationException: ``16-true``, or a ``transformer-engine`` precision without the
            ``transformer_engine`` package.
    """
    if precision is None or str(precision) in SUPPORTED_PRECISIONS:
        return
    if str(precision).startswith("transformer-engine") and importlib.util.find_spec("transformer_engine"):
        return  # Lightning's own plugin, on NVIDIA GPUs
    why = (
        "with float16 weights and no loss scaling the loss turns NaN within a few steps"
        if str(precision) == "16-true"
        else "it needs NVIDIA's transformer_engine package (GPUs only)"
    )
    raise MisconfigurationException(
        f"--trainer.precision {precision} is not supported: {why}; use 32-true (the default), 64-true, "
        "bf16-true, bf16-mixed or 16-mixed"
    )


#: /proc/cpuinfo flags of CPUs that compute bfloat16 in hardware (Intel AMX, AVX-512 BF16 on Intel and AMD Zen 4+).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU lists one of :data:`BF16_CPU_FLAGS`; None when ``cpuinfo`` cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return None
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def bf16_cpu_notice(precision: object, on_cpu: bool) -> str | None:
    """The one-line notice for a bfloat16 run on a CPU without bfloat16 hardware, where PyTorch emulates it
    (a fit of configs/fast.yaml took 11x the float32 time on an AVX2 CPU, under load: docs/performance.md), else None."""
    if not on_cpu or "bf16" not in str(precision) or cpu_has_bf16() is not False:
        return None
    return (
        f"note: --trainer.precision {precision} on a CPU without AMX or AVX-512 BF16: bfloat16 is emulated "
        "and training is several times slower than 32-true (configs/mnist.yaml)"
    )
