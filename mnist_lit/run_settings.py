"""A trained run is self-contained: what ``--ckpt_path`` means and which settings a command takes from the run.

The rules, applied by :class:`mnist_lit.cli.MNISTLightningCLI` right after parsing:

* ``validate``/``test``/``predict`` need a checkpoint (an untrained network is never what a user
  means). ``best`` and ``last`` name the newest training run's best (by ``val_acc``) or last checkpoint
  under the logger's folder (:func:`mnist_lit.runs.newest_checkpoint`), and when that run has none yet,
  the error says so (never an older run's model); ``hpc``, URLs and folders are refused.
* A command on a checkpoint starts from the settings of the run that wrote it: its ``config.yaml``
  next to ``checkpoints/``, else the checkpoint's saved datamodule hyperparameters
  (:func:`base_config`). The command's ``--config`` files, then its flags, override them; what
  they leave unset is the run's, never a default the run did not use.
* The model's hyperparameters (pixel scaling, data set, ...) always come from the checkpoint; a
  ``--model.*`` flag that says otherwise, a data set other than the model's, or (for ``validate``) a
  split other than training's is refused with one line naming both values
  (:func:`mnist_lit.data_choice.check_eval`).
* ``fit --ckpt_path`` continues the same run only: the command's configuration must equal the run's
  recorded one up to :data:`mnist_lit.runs.RESUMABLE_CHANGES` (:func:`check_resume`); ``last`` picks
  the newest run whose configuration matches (:func:`find_run_to_resume`). New hyperparameters on
  trained weights is fine-tuning: ``fit --finetune_from CKPT``, a new run, with the checkpoint's pixel
  scale; another data set only when ``--data.dataset`` names it (:mod:`mnist_lit.finetune`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_lit.checkpoint import model_hparams
from mnist_lit.errors import CheckpointError, SettingError, empty_checkpoint_flag
from mnist_lit.runs import (
    CONFIG_NAME,
    LAST_NAME,
    differences,
    logger_root,
    newest_checkpoint,
    read_config,
    run_config_of,
    run_dir_of,
    run_folders,
    version_of,
)

KEYWORDS = ("best", "last")


def resolve_ckpt_path(subcommand: str, ckpt_path: str | None, trainer_config: Mapping[str, Any]) -> str | None:
    """The checkpoint file a ``validate``/``test``/``predict`` command means, or for ``fit`` its ``ckpt_path``.

    Returns:
        a file path; ``"last"`` for ``fit`` (see :func:`find_run_to_resume`); ``None`` for a ``fit``
        without one.

    Raises:
        CheckpointError: no or an empty ``--ckpt_path`` outside ``fit``; ``best`` with ``fit``; ``hpc``,
            ``registry`` or a URL; ``best``/``last`` when the newest training run has none (named), or
            when there is no training run (the message lists the folder looked in).
    """
    value = None if ckpt_path is None else str(ckpt_path)
    if value is None:
        if subcommand == "fit":
            return None
        default_root = logger_root(trainer_config) or Path("lightning_logs")
        raise CheckpointError(
            f"{subcommand} needs a trained model: add --ckpt_path with a .ckpt file written by fit, "
            f"or --ckpt_path best / last for the newest run in {default_root}/"
        )
    if value == "":  # an unset shell variable or an empty config entry: never read as "none given"
        raise CheckpointError(empty_checkpoint_flag("--ckpt_path"))
    if "://" in value or value in ("hpc", "registry") or value.startswith("registry:"):
        raise CheckpointError(f"--ckpt_path {value}: not supported here; give a local .ckpt file, or best / last")
    if value not in KEYWORDS:
        return value
    if subcommand == "fit":
        if value == "best":
            raise CheckpointError(
                "fit --ckpt_path best: fit resumes a run from its last checkpoint; use --ckpt_path "
                "last, or --finetune_from CKPT to start a new run from trained weights"
            )
        return value
    root = logger_root(trainer_config)
    if root is None:
        raise CheckpointError(
            f"--ckpt_path {value}: the logger keeps no lightning_logs/version_N folders to look in; give the .ckpt file"
        )
    return str(newest_or_error(root, value))


def newest_or_error(root: Path, value: str) -> Path:
    """The ``best``/``last`` checkpoint of the newest run under ``root``; never silently an older run's model.

    Raises:
        CheckpointError: the newest run has no such checkpoint (named), or there is no run under ``root``.
    """
    found, run_dir, looked = newest_checkpoint(root, value)
    if found is not None:
        return found
    if run_dir is not None:
        if value == "best" and (run_dir / "checkpoints" / LAST_NAME).is_file():
            raise CheckpointError(
                f"--ckpt_path best: the newest run, {run_dir}, has no best checkpoint (by val_acc) "
                "yet; use --ckpt_path last or give a .ckpt file"
            )
        raise CheckpointError(
            f"--ckpt_path {value}: the newest run, {run_dir}, has no checkpoint yet (stopped or "
            "still running before its first one); give the .ckpt file of another run"
        )
    where = f"{len(looked)} run folders under {root}/" if looked else f"{root}/ (no version_N folders)"
    raise CheckpointError(
        f"--ckpt_path {value}: no {value} checkpoint found in {where}; train first (fit) or "
        "give the path of a .ckpt file"
    )


#: Data settings that older versions saved in a run's config.yaml and checkpoints and that have moved since:
#: ``pixel_scale`` into the model (its checkpoints carry it: :func:`mnist_lit.checkpoint.model_hparams`),
#: ``predict_path``/``predict_sheet`` into :class:`mnist_lit.pictures.PicturesDataModule`. Dropped from such a
#: run's settings (when unset, or always for ``pixel_scale``), so its checkpoints still work without ``--config``.
MOVED_DATA_KEYS = ("pixel_scale", "predict_path", "predict_sheet")


def _current_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` settings without :data:`MOVED_DATA_KEYS` (a ``predict_path`` that was set stays, to be refused)."""
    return {
        k: v
        for k, v in data.items()
        if not (k in MOVED_DATA_KEYS and (k == "pixel_scale" or v is None)) and not k.startswith("_")
    }


#: Where an evaluation runs, whatever the run's training used: this machine, one process. A run trained on two
#: nodes waited forever for a second node when its checkpoint was tested; ``--trainer.*`` flags (or a launcher's
#: processes with matching flags: :func:`mnist_lit.distributed.check_launch`) choose otherwise.
EVALUATION_PLACEMENT = {"accelerator": "auto", "strategy": "auto", "devices": 1, "num_nodes": 1}


def base_config(ckpt_path: str | Path, checkpoint: Mapping[str, Any], evaluate: bool = False) -> str | None:
    """What to pass as the first ``--config`` of a command on ``ckpt_path``, before the command's own files and flags.

    The run's ``config.yaml`` when the checkpoint lies in ``RUN/checkpoints/`` (without :data:`MOVED_DATA_KEYS`
    when an older version wrote it); else the checkpoint's ``datamodule_hyper_parameters``; ``None`` when it
    has neither. For ``evaluate`` (validate/test/predict) the trainer's placement is
    :data:`EVALUATION_PLACEMENT`. A JSON config string, or the path of the run's config.yaml as it is.
    """
    found = run_config_of(ckpt_path)
    if found is not None:
        config = read_config(found)
        data = config.get("data")
        if not evaluate and (
            not isinstance(data, Mapping) or "class_path" in data or not set(MOVED_DATA_KEYS) & set(data)
        ):
            return str(found)
        if isinstance(data, Mapping) and "class_path" not in data:
            config = {**config, "data": _current_data(data)}
    else:
        data = _current_data(checkpoint.get("datamodule_hyper_parameters") or {})
        config = {"data": data} if data else {}
    if evaluate:
        config = {**config, "trainer": {**(config.get("trainer") or {}), **EVALUATION_PLACEMENT}}
    return json.dumps(config) if config else None


def explicit_flags(argv: Sequence[str], section: str) -> set[str]:
    """Names set on the command line as ``--SECTION.NAME VALUE`` or ``--SECTION.NAME=VALUE``."""
    prefix = f"--{section}."
    return {arg[len(prefix) :].split("=", 1)[0] for arg in argv if arg.startswith(prefix)}


def check_model_flags(
    ckpt_path: str | Path, checkpoint: Mapping[str, Any], model_config: Mapping[str, Any], argv: Sequence[str]
) -> dict[str, Any]:
    """The checkpoint's model hyperparameters, after refusing ``--model.*`` flags that contradict them.

    Raises:
        CheckpointError: a ``--model.NAME`` flag whose value differs from the checkpoint's.
    """
    hparams = model_hparams(dict(checkpoint))
    for name in sorted(explicit_flags(argv, "model")):
        if name in hparams and model_config.get(name) != hparams[name]:
            raise CheckpointError(
                f"--model.{name} {model_config.get(name)!r} contradicts the checkpoint {ckpt_path}, "
                f"trained with model.{name} {hparams[name]!r}; drop the flag (the model's own "
                "settings come from its checkpoint)"
            )
    return hparams


def check_training_length(trainer_config: Mapping[str, Any]) -> None:
    """Refuse a ``fit`` that trains nothing (``max_epochs``, ``max_steps`` or ``limit_train_batches`` 0, also as
    0.0 or a YAML float that rounds to it, ``1e-400``): it would test untrained weights with exit status 0.

    Raises:
        SettingError: one line naming the setting.
    """
    for key, allowed in (("max_epochs", "1"), ("max_steps", "1"), ("limit_train_batches", "a fraction above 0, or 1")):
        value = trainer_config.get(key)
        if value == 0 and not isinstance(value, bool):
            raise SettingError(f"--trainer.{key} {value} trains nothing; give {allowed} or more")


def check_resume(ckpt_path: str | Path, checkpoint: Mapping[str, Any], command: Mapping[str, Any]) -> None:
    """Refuse ``fit --ckpt_path CKPT`` whose configuration differs from the run's recorded one.

    ``command`` is the command's configuration as a plain dict (as ``config.yaml`` holds it). The
    recorded one is the run's ``config.yaml``, else the checkpoint's hyperparameters.

    Raises:
        CheckpointError: one line listing every difference, and the way to fine-tune instead.
    """
    config = run_config_of(ckpt_path)
    if config is not None:
        recorded = read_config(config)
    else:
        recorded = {
            "model": model_hparams(dict(checkpoint)),
            "data": dict(checkpoint.get("datamodule_hyper_parameters") or {}),
        }
        command = {key: command.get(key) for key in recorded}
    changed = differences(recorded, command)
    if changed:
        raise CheckpointError(
            f"cannot resume {ckpt_path}: the command differs from the run's configuration in "
            f"{'; '.join(changed)}; resume with the run's settings, or start a new run from these "
            f"weights with --finetune_from {ckpt_path}"
        )


def max_epochs_of(trainer_config: Mapping[str, Any]) -> int:
    """The ``max_epochs`` a fit runs with, as Lightning settles it (``fast_dev_run``: 1; unset: 1000, or -1 (no
    limit) with ``max_steps``, ``max_time`` or a ``Timer`` callback: ``lightning.pytorch.loops.utilities``)."""
    if trainer_config.get("fast_dev_run"):
        return 1
    if trainer_config.get("max_epochs") is not None:
        return int(trainer_config["max_epochs"])
    callbacks = trainer_config.get("callbacks") or []
    timer = any(str(c.get("class_path", "")).endswith(".Timer") for c in callbacks if hasattr(c, "get"))
    return -1 if trainer_config.get("max_steps", -1) != -1 or trainer_config.get("max_time") or timer else 1000


def check_epochs_left(ckpt_path: str | Path, checkpoint: Mapping[str, Any], trainer_config: Mapping[str, Any]) -> None:
    """Refuse ``fit --ckpt_path CKPT`` with a ``max_epochs`` below the epochs the checkpoint has trained, before the
    run is touched.

    Lightning's own check (``_CheckpointConnector.restore_training_state``: the restored ``current_epoch``, the
    fit loop's completed epochs, above ``max_epochs``) lets one epoch less through (it trains nothing and rewrites
    the run's logs), and comes after the run folder has been trimmed and written to.

    Raises:
        CheckpointError: one line naming the epochs the checkpoint has trained and the ``max_epochs`` to pass.
    """
    progress = (checkpoint.get("loops") or {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    epoch = int(progress.get("completed", checkpoint.get("epoch", 0)))
    trained = int(progress.get("processed", epoch))  # epochs whose training ended; the save comes before `completed`
    max_epochs = max_epochs_of(trainer_config)
    if max_epochs == -1 or trained <= max_epochs:  # equal: nothing left to train, the run is tested again
        return
    in_run = run_dir_of(ckpt_path) is not None
    subject = f"{Path(ckpt_path).parent.parent}: its checkpoint {ckpt_path}" if in_run else f"from {ckpt_path}: it"
    raise CheckpointError(
        f"cannot resume {subject} has trained {trained} epochs, and --trainer.max_epochs is {max_epochs}; "
        f"pass --trainer.max_epochs {trained + 1} or more to train further"
    )


def find_run_to_resume(root: Path | None, command: Mapping[str, Any]) -> tuple[Path | None, Path | None, str]:
    """For ``fit --ckpt_path last``: the newest run under ``root`` whose recorded configuration matches.

    Returns:
        (``last.ckpt`` to resume or ``None``, the run folder to reuse or ``None``, a line saying what
        happens): a matching run with a ``last.ckpt`` is resumed; a matching run killed before its
        first checkpoint is trained again in its own folder; otherwise a new run starts.

    Raises:
        CheckpointError: the logger keeps no run folders (``root`` is ``None``).
    """
    if root is None:
        raise CheckpointError(
            "fit --ckpt_path last: the logger keeps no lightning_logs/version_N folders to look in; give the .ckpt file"
        )
    for run_dir in run_folders(root):
        recorded = read_config(run_dir / CONFIG_NAME)
        if not recorded or recorded.get("ckpt_path") or differences(recorded, command):
            continue  # a validate/test/predict folder (its config names a checkpoint) is never a run to resume
        last = run_dir / "checkpoints" / LAST_NAME
        if last.is_file():
            return last, run_dir, f"Resuming {run_dir} from {last}"
        return None, run_dir, f"{run_dir} stopped before its first checkpoint: training it again from the start there"
    return None, None, f"No run in {root}/ has this configuration: starting a new run"


def resumed_version(ckpt_path: str | Path, root: Path | None) -> int | None:
    """``N`` when ``ckpt_path`` lies in ``ROOT/version_N/checkpoints/``, so a resumed fit logs there too."""
    run_dir = Path(ckpt_path).resolve().parent.parent
    if root is None or Path(ckpt_path).resolve().parent.name != "checkpoints" or run_dir.parent != root.resolve():
        return None
    return version_of(run_dir)
