"""TensorBoard without TensorFlow: the CLI writes its event files with TensorBoard's own writer.

``torch.utils.tensorboard`` (what Lightning's ``TensorBoardLogger`` writes with) reads
``tensorboard.compat.tf`` when it is imported, and TensorBoard resolves that to the whole of TensorFlow
whenever TensorFlow is installed, e.g. next to the Keras comparison (``pip install -e '.[bench]'``).
That import costs every ``fit`` seconds (docs/performance.md) and
gives nothing here: the event files are the same. TensorBoard's documented switch
(``tensorboard.compat.tf``'s docstring: the ``no_tensorflow`` target) is the presence of the module
``tensorboard.compat.notf``, which makes it use its built-in stub, as it does when TensorFlow is
not installed. :func:`use_tensorboard_stub` registers that module; the CLI calls it (a program
that imports mnist_lit as a library keeps TensorBoard's default).

The stub writes to local folders (and ``s3://`` with boto3); a command line that names another
URL (``gs://``, ``hdfs://``, ...) keeps TensorFlow's file system.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence

MARKER = "tensorboard.compat.notf"


def use_tensorboard_stub(argv: Sequence[str]) -> bool:
    """Make TensorBoard use its TensorFlow stub in this process, unless ``argv`` names a URL other than
    ``s3://`` or TensorFlow is already imported; returns whether the marker is set (TensorBoard reads it
    when ``tensorboard.compat.tf`` is first used)."""
    if "tensorflow" in sys.modules or any("://" in arg and "s3://" not in arg for arg in argv):
        return False
    sys.modules.setdefault(MARKER, types.ModuleType(MARKER, "Selects TensorBoard's TensorFlow stub (mnist_lit)."))
    return True
