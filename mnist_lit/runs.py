"""Run folders: where ``lightning_logs/version_N`` runs live, which checkpoint ``best`` and ``last`` mean,
claiming a new folder atomically, and what in a run's recorded configuration may change on resume.

A run folder holds ``config.yaml`` (written by LightningCLI when ``fit`` starts), the event files and
``checkpoints/``. Everything here only reads, except :func:`claim_version`, which creates one empty
folder with ``mkdir`` (atomic: of two processes asking at once, exactly one gets each number).
"""

from __future__ import annotations

import atexit
import contextlib
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mnist_lit.checkpoint import load_checkpoint
from mnist_lit.errors import CheckpointError, SettingError

LAST_NAME = "last.ckpt"  # ModelCheckpoint.CHECKPOINT_NAME_LAST + FILE_EXTENSION
LOCK_NAME = ".fit.lock"  # held by the fit training in a run folder (mnist_lit.resume.hold_run)
CONFIG_NAME = "config.yaml"  # LightningCLI's SaveConfigCallback default config_filename
_VERSION = re.compile(r"version_(\d+)")
_SCORE = re.compile(r"val_acc[=_]?(\d+(?:\.\d+)?)")

#: Settings a resumed ``fit`` may change: how long, where and how fast it runs, never what it learns.
RESUMABLE_CHANGES = {
    "trainer": {
        "max_epochs",
        "min_epochs",
        "max_steps",
        "min_steps",
        "max_time",
        "accelerator",
        "devices",
        "num_nodes",
        "strategy",
        "enable_progress_bar",
        "enable_model_summary",
        "callbacks",
        "logger",
        "default_root_dir",
        "limit_train_batches",
        "limit_val_batches",
        "limit_test_batches",
        "limit_predict_batches",
        "num_sanity_val_steps",
        "profiler",
        "plugins",
        "barebones",
        "enable_checkpointing",
        "val_check_interval",
        "check_val_every_n_epoch",
        "log_every_n_steps",
        "fast_dev_run",
        "overfit_batches",
        "detect_anomaly",
        "inference_mode",
        "use_distributed_sampler",
        "sync_batchnorm",
        "reload_dataloaders_every_n_epochs",
        "enable_autolog_hparams",
        "model_registry",
    },
    "data": {
        "data_dir",
        "download",
        "mirrors",
        "download_timeout",
        "num_workers",
        "pin_memory",
        "data_on_device",
        "predict_path",
        "predict_sheet",
    },
}
#: Top-level keys that are not part of what a run learns.
IGNORED_TOP = {
    "config",
    "ckpt_path",
    "test_after_fit",
    "finetune_from",
    "subcommand",
    "verbose",
    "return_predictions",
    "optimizer",
    "lr_scheduler",
}


def logger_root(trainer_config: Mapping[str, Any]) -> Path | None:
    """The folder of ``version_N`` run folders for a parsed ``trainer`` config, or ``None``.

    A ``TensorBoardLogger`` or ``CSVLogger`` given as ``class_path``/``init_args``:
    ``save_dir/name``; the default logger (``logger`` unset or true): ``default_root_dir/lightning_logs``;
    no logger or another one: ``None``.
    """
    logger, default_root = trainer_config.get("logger"), trainer_config.get("default_root_dir") or "."
    if logger is None or logger is True:
        return Path(default_root) / "lightning_logs"
    if hasattr(logger, "get") and str(logger.get("class_path", "")).rsplit(".", 1)[-1] in (
        "TensorBoardLogger",
        "CSVLogger",
    ):
        args = logger.get("init_args") or {}
        return Path(args.get("save_dir") or default_root) / (args.get("name") or "lightning_logs")
    return None


def version_of(run_dir: str | Path) -> int | None:
    """``N`` for a folder named ``version_N``, else ``None``."""
    match = _VERSION.fullmatch(Path(run_dir).name)
    return int(match.group(1)) if match else None


def run_dir_of(ckpt_path: str | Path) -> Path | None:
    """The run folder of ``RUN/checkpoints/NAME.ckpt`` (``RUN``), or ``None`` for a checkpoint elsewhere."""
    ckpt = Path(ckpt_path).resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def run_config_of(ckpt_path: str | Path) -> Path | None:
    """The ``config.yaml`` of the run that wrote ``ckpt_path``, if it is there."""
    run_dir = run_dir_of(ckpt_path)
    config = run_dir / CONFIG_NAME if run_dir is not None else None
    return config if config is not None and config.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """A run's ``config.yaml`` as a dict (``yaml.safe_load``; an unreadable file gives ``{}``)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def run_folders(root: Path) -> list[Path]:
    """``ROOT/version_N`` folders, newest (highest ``N``) first."""
    found = [p for p in root.glob("version_*") if p.is_dir() and version_of(p) is not None] if root.is_dir() else []
    return sorted(found, key=lambda p: version_of(p) or 0, reverse=True)


def best_checkpoint(run_dir: Path) -> Path | None:
    """The run's best checkpoint by ``val_acc``: the ``best_model_path`` its last checkpoint recorded
    (when that file is in the run's ``checkpoints/``), else the ``*val_acc*.ckpt`` file with the highest
    score in its name; ``None`` when the run has neither."""
    folder = run_dir / "checkpoints"
    last = folder / LAST_NAME
    if last.is_file():
        try:
            states = load_checkpoint(last).get("callbacks") or {}
        except CheckpointError:
            states = {}
        for key, state in states.items():
            recorded = Path(str(state.get("best_model_path") or "")).name if "val_acc" in str(key) else ""
            if recorded and (folder / recorded).is_file():
                return folder / recorded
    scored = [(float(m.group(1).rstrip(".")), p) for p in folder.glob("*.ckpt") if (m := _SCORE.search(p.stem))]
    return max(scored)[1] if scored else None


def is_training_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a ``fit`` run's folder: it has ``checkpoints/``, or its ``config.yaml`` names no
    ``ckpt_path`` (the folders of ``validate``/``test``/``predict`` always name one and hold no checkpoints)."""
    if (run_dir / "checkpoints").is_dir():
        return True
    config = read_config(run_dir / CONFIG_NAME)
    return bool(config) and not config.get("ckpt_path")


def newest_checkpoint(root: Path, which: str) -> tuple[Path | None, Path | None, list[Path]]:
    """For ``--ckpt_path best`` or ``last`` outside ``fit``: that checkpoint of the newest training run under
    ``root`` (:func:`is_training_run`), never an older run's when the newest has none yet.

    Returns:
        (the checkpoint or ``None``, the newest training run folder or ``None``, the run folders looked at).
    """
    looked = run_folders(root)
    run_dir = next((r for r in looked if is_training_run(r)), None)
    if run_dir is None:
        return None, None, looked
    found = best_checkpoint(run_dir) if which == "best" else run_dir / "checkpoints" / LAST_NAME
    return (found if found is not None and found.is_file() else None), run_dir, looked


def claim_version(root: Path) -> int:
    """Create ``ROOT/version_N`` for the lowest free ``N`` above every existing one, atomically (``mkdir``).

    A claimed folder that is still empty when the process ends (e.g. a data error stopped the run before it
    logged anything) is removed again, with ``ROOT`` if this call created it (:func:`release_unused`), so a
    failed start leaves nothing behind.

    Raises:
        SettingError: ``ROOT`` cannot be created or written to (a read-only folder).
    """
    created_root = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(root, err) from None
    versions = (version_of(p) for p in root.glob("version_*"))
    number = max((v for v in versions if v is not None), default=-1) + 1
    while True:
        folder = root / f"version_{number}"
        try:
            folder.mkdir()
        except FileExistsError:
            number += 1
            continue
        except OSError as err:
            raise _unwritable(root, err) from None
        _claimed.append(folder)
        if created_root:
            _claimed.append(root)
        return number


def _unwritable(root: Path, err: OSError) -> SettingError:
    return SettingError(
        f"cannot make a run folder in {root}/ ({err.strerror or err}); run from a folder you can write to, "
        "or set the logger's save_dir"
    )


_claimed: list[Path] = []  # folders made by claim_version, innermost first


def evaluate_in_a_new_folder(config, argv: list[str]) -> None:
    """A run whose logger writes into a fixed folder (a ``cv`` fold: ``cv_N/fold_k``) is evaluated in a new
    ``lightning_logs/version_N`` instead, never into the fold's own folder, unless ``--trainer.logger`` is given."""
    init = getattr(config.trainer.get("logger"), "init_args", None)
    if (
        init is not None
        and isinstance(init.get("version"), str)
        and not any(arg.startswith("--trainer.logger") for arg in argv)
    ):
        init.save_dir, init.name, init.version = ".", "lightning_logs", None


def release_unused() -> None:
    """Remove the folders :func:`claim_version` made that are still empty (runs at exit, and on an error)."""
    while _claimed:
        folder = _claimed.pop(0)
        with contextlib.suppress(OSError):  # rmdir fails unless the folder is empty
            if [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # only this fit's lock (resume.hold_run)
                (folder / LOCK_NAME).unlink()
            folder.rmdir()


def discard_claimed() -> None:
    """Remove the ``version_N`` folders :func:`claim_version` made in this process, with what this process wrote
    into them (an evaluation stopped by SIGTERM before its results: nothing in them is complete), then the
    root if this process created it and it is empty. Folders this process did not claim are never touched."""
    for folder in _claimed:
        if version_of(folder) is not None:
            shutil.rmtree(folder, ignore_errors=True)
    release_unused()


atexit.register(release_unused)


def data_settings(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The DataModule's arguments in a configuration (a ``config.yaml`` dict or a parsed namespace): the
    ``init_args`` of a ``data: {class_path, init_args}`` section (LightningCLI's ``--data CLASS``), or the
    section itself when it has no ``class_path`` (configs and runs written before the picture DataModule);
    ``{}`` without one."""
    data = config.get("data") or {}
    return (data.get("init_args") or {}) if "class_path" in data else data


def differences(recorded: Mapping[str, Any], command: Mapping[str, Any]) -> list[str]:
    """What ``command`` changes in a run's ``recorded`` configuration, beyond :data:`RESUMABLE_CHANGES`.

    Both are plain dicts as in ``config.yaml`` (sections ``trainer``, ``model``, ``data``,
    ``seed_everything``; ``data`` flat or as ``class_path``/``init_args``: :func:`data_settings`).
    Returns lines such as ``"model.lr 0.002 (run: 0.001)"``, sorted.
    """
    recorded, command = ({**c, "data": data_settings(c)} for c in (recorded, command))
    found = []
    for key in sorted(set(recorded) | set(command)):
        if key in IGNORED_TOP:
            continue
        old, new = recorded.get(key), command.get(key)
        if isinstance(old, Mapping) or isinstance(new, Mapping):
            old, new, allowed = old or {}, new or {}, RESUMABLE_CHANGES.get(key, set())
            found += [
                f"{key}.{k} {new.get(k)!r} (run: {old.get(k)!r})"
                for k in sorted(set(old) | set(new))
                if k not in allowed and old.get(k) != new.get(k)
            ]
        elif old != new:
            found.append(f"{key} {new!r} (run: {old!r})")
    return found
