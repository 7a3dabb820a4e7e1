"""Which ``--trainer.precision`` values this model runs with, checked before a run starts.

The data module hands the network float32 pixels (scaled after the batch reached its device), and
Lightning's ``*-true`` precisions convert the weights only: 64-true, 16-true and bf16-true stopped
after the sanity check with ``RuntimeError: Input type (float) and bias type (double) should be the
same`` and a 100-line traceback. Mixed precisions (autocast, float32 weights) work on CPUs and GPUs.
"""

from __future__ import annotations

from lightning.pytorch.utilities.exceptions import MisconfigurationException

#: Accepted values (Lightning's spellings, its short aliases included); ``None`` is Lightning's default, 32-true.
SUPPORTED_PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16")


def check_precision(precision: object) -> None:
    """Refuse a ``--trainer.precision`` the model cannot run with, in one line naming the supported ones.

    Raises:
        MisconfigurationException: ``precision`` is not ``None`` and not in :data:`SUPPORTED_PRECISIONS`
            (e.g. ``64-true``, ``16-true``, ``bf16-true``, ``transformer-engine``).
    """
    if precision is None or str(precision) in SUPPORTED_PRECISIONS:
        return
    raise MisconfigurationException(
        f"--trainer.precision {precision} is not supported: this model's inputs are float32 pixels, which only "
        "32-true (the default), bf16-mixed and 16-mixed accept; use one of those")
