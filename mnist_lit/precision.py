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
    why = ("with float16 weights and no loss scaling the loss turns NaN within a few steps"
           if str(precision) == "16-true" else "it needs NVIDIA's transformer_engine package (GPUs only)")
    raise MisconfigurationException(
        f"--trainer.precision {precision} is not supported: {why}; use 32-true (the default), 64-true, "
        "bf16-true, bf16-mixed or 16-mixed")
