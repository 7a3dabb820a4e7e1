"""Messages from Lightning that a user of this package cannot act on, kept off the terminal.

Each one is matched by its exact text, so nothing else from the same source is hidden:

- the "💡 Tip: ... try installing [litlogger]" and "[litmodels]" adverts printed before runs (INFO records of
  Lightning's ``rank_zero`` logger);
- "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided" for
  ``validate``/``test``/``predict`` on a checkpoint copied out of its run (no ``config.yaml`` beside it):
  an evaluation restores no callback state, so nothing is missing;
- ``.test(ckpt_path="best") is called with Trainer configured with multiple ModelCheckpoint
  callbacks``: the configs keep a best-``val_acc`` checkpoint and ``last.ckpt``, and "best" is the
  first one's, as intended (a warning after every ``fit``);
- "`weights_only` was not set, defaulting to `False`.": ``lr_find`` and ``tune``'s batch-size
  search save a temporary checkpoint of the whole training state, which needs the default;
- "Checkpoint directory ... exists and is not empty." when a ``fit`` resumes from ``--ckpt_path``
  into its own run folder, where the checkpoints are expected;
- "Precision bf16-mixed is not supported by the model summary ... Using 32 bits instead." (configs/fast.yaml):
  in mixed precision the weights are float32, so the summary's 32-bit size is the right one.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

from mnist_lit.command_line import EVALUATION_COMMANDS

#: (logger name, start of the message) of the INFO records dropped.
HIDDEN_RECORDS = (
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud logging"),
    ("lightning.fabric.utilities.rank_zero", "💡 Tip: For seamless cloud logging"),
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud uploads"),
    ("lightning.pytorch.trainer.connectors.checkpoint_connector", "`weights_only` was not set, defaulting to"),
)


class _DropMessages(logging.Filter):
    """Drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def hide_unactionable_messages(argv: Sequence[str]) -> None:
    """Install the filters for the messages listed in this module's docstring (idempotent).

    Args:
        argv: the command line after the program name; "exists and is not empty" is hidden only
            for a ``fit`` given ``--ckpt_path`` (a resume).
    """
    for name, prefix in HIDDEN_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and prefix in f.prefixes for f in logger.filters):
            logger.addFilter(_DropMessages([prefix]))
    warnings.filterwarnings(
        "ignore",
        message=r'`\.\w+\(ckpt_path="best"\)` is called with Trainer configured with '
        r"multiple `ModelCheckpoint` callbacks",
    )
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")
    if argv and argv[0] in EVALUATION_COMMANDS:
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
    resuming = any(arg == "--ckpt_path" or arg.startswith("--ckpt_path=") for arg in argv)
    if argv and argv[0] == "fit" and resuming:
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
