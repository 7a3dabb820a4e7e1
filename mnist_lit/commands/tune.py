"""``python -m mnist_lit tune``: an Optuna search over a tune config's space (the tutorial's §5), maximising val_acc.

This module parses the command and reads the tune config; :mod:`mnist_lit.commands.study` creates or joins the
study and reports it, :mod:`mnist_lit.commands.trials` runs the trials, :mod:`mnist_lit.commands.storage` opens
a study that several workers share. Optuna is an optional dependency (``pip install 'mnist_lit[tune]'``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml

from mnist_lit.commands.common import parse_command
from mnist_lit.errors import TuneError

#: The first part of a searchable flag: the sections of ``fit``'s configuration.
SECTIONS = ("model", "data", "trainer", "augment")


def tune_options(p: argparse.ArgumentParser) -> None:
    """Add the options of ``tune`` (search space file, trials, storage, study name, report) to ``p``."""
    p.add_argument(
        "--tune_config", default="configs/tune.yaml", help="Search space, trials, pruner (default: configs/tune.yaml)."
    )
    p.add_argument(
        "--n_trials",
        type=int,
        default=None,
        help="Override the tune config's n_trials; with --storage the total over all workers.",
    )
    p.add_argument("--timeout", type=float, default=None, help="Stop starting trials after this many seconds.")
    p.add_argument(
        "--storage",
        default=None,
        help="Share the study with other workers: a journal file path (one machine or a shared file "
        "system) or a database URL (postgresql+psycopg://USER@HOST/DB, sqlite:///FILE.db).",
    )
    p.add_argument("--study_name", default=None, help="The shared study's name (the same in every worker).")
    p.add_argument(
        "--report",
        action="store_true",
        help="With --storage: only write trials.csv and best_config.yaml of the study, run nothing.",
    )
    p.add_argument("--verbose", action="store_true", help="Print the traceback of a trial that fails.")


def check_tune_options(opts: argparse.Namespace) -> None:
    """Refuse ``--storage`` without ``--study_name``, a study name that cannot name a folder, ``--report``
    without ``--storage``.

    Raises:
        TuneError: one line naming the option.
    """
    if opts.storage is not None and not opts.study_name:
        raise TuneError("--storage needs --study_name NAME (the same in every worker)")
    if opts.study_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", opts.study_name):
        raise TuneError(
            f"--study_name must be letters, digits, '_', '.', '-' (it names a folder), got {opts.study_name!r}"
        )
    if opts.report and opts.storage is None:
        raise TuneError("--report needs --storage URL --study_name NAME (the study to report)")


def tune_main(argv: list[str]) -> None:
    """``python -m mnist_lit tune --tune_config configs/tune.yaml [--storage URL --study_name NAME] [fit flags]``.

    An Optuna search maximising val_acc. Each trial is a ``fit`` with the suggested flags appended,
    scored by its last epoch's ``val_acc`` on the validation split (never the test set). ``val_acc`` is
    reported to Optuna after every epoch and :class:`optuna.pruners.MedianPruner` stops trials that fall
    below the median of earlier trials at the same epoch (optuna-integration's
    ``PyTorchLightningPruningCallback``). A trial that fails prints one line (its traceback with
    ``--verbose``) and the search goes on; but when its data files or a checkpoint fail it once its run is built
    (:data:`mnist_lit.commands.trials.STUDY_ERRORS`: every trial would fail alike), the search stops with that
    error's line, the trials so far recorded in ``trials.csv``.

    Without ``--storage`` the study lives in this process (TPE sampler seeded by the tune config) and
    writes into a new ``lightning_logs/tune_N/``. With ``--storage`` (see :mod:`mnist_lit.commands.storage`) any
    number of workers started with the same ``--study_name`` share it and write into
    ``lightning_logs/tune_NAME/``: ``--n_trials`` is the total over all of them, pruning compares with
    every worker's trials, each worker samples with its own seed (TPE with ``constant_liar``), and a
    stopped worker (Ctrl-C, SIGTERM) loses only its running trial, which restarting any worker runs again.

    Writes ``trials.csv`` after every trial (``number, state, val_acc, epochs, duration_s``, each parameter,
    ``worker``, ``log_dir``) and at the end ``best_config.yaml``: the complete configuration of the best
    trial, which ``fit --config best_config.yaml`` accepts. ``--report`` writes both without running.

    Raises:
        TuneError: optuna missing, a bad tune config, an unusable ``--storage``, a study of another search
            space, no trial completed. DataError, IdxError, CheckpointError: a trial's data or checkpoint.
    """
    opts, fit_args = parse_command(
        "tune", "Optuna search over the tune config's space, maximising val_acc.", tune_options, argv
    )
    try:
        import optuna  # an optional dependency, and not imported by `tune --help`
        import optuna_integration  # noqa: F401
    except ImportError:
        raise TuneError("tune needs optuna and optuna-integration: pip install 'mnist_lit[tune]'") from None
    from mnist_lit.commands import study  # optuna at its top: imported once optuna is known to be there

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed here instead
    check_tune_options(opts)
    if opts.report:
        study.report_stored(opts.storage, opts.study_name, Path(opts.log_dir) / f"tune_{opts.study_name}")
        return
    config = load_tune_config(opts.tune_config)
    n_trials = opts.n_trials if opts.n_trials is not None else int(config.get("n_trials", 20))
    if n_trials < 1:
        raise TuneError(f"n_trials must be 1 or more, got {n_trials}")
    study.search(config, distributions(config["search_space"]), n_trials, fit_args, opts)


def load_tune_config(path: str | Path) -> dict[str, Any]:
    """Read and check a tune config (see ``configs/tune.yaml``).

    Keys: ``n_trials`` (int), ``seed`` (TPE sampler seed), ``pruner`` (``MedianPruner`` keyword
    arguments), ``search_space``: ``{fit flag without --: {type: float|int, low, high[, log]} or
    {type: categorical, choices}}``, each entry checked by the Optuna distribution it becomes
    (:func:`distributions`).

    Raises:
        TuneError: missing file, bad YAML, or a search-space entry that cannot be suggested.
    """
    path = Path(path)
    if not path.is_file():
        raise TuneError(f"tune config {path} not found; pass --tune_config PATH (see configs/tune.yaml)")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise TuneError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    space = config.get("search_space")
    if not isinstance(space, dict) or not space:
        raise TuneError(f"{path}: needs a non-empty 'search_space' mapping of fit flags to ranges")
    distributions(space, path)
    return config


def distributions(space: dict[str, Any], path: str | Path = "the tune config") -> dict[str, Any]:
    """The search space as Optuna distributions, ``{flag: FloatDistribution | IntDistribution |
    CategoricalDistribution}``; Optuna's own checks refuse bad ranges (``low > high``, ``log`` with ``low <= 0``,
    no choices).

    Raises:
        TuneError: an entry that is not a ``model.``/``data.``/``trainer.``/``augment.`` flag with a valid range.
    """
    from optuna import distributions as dist  # an optional dependency, and not imported by `tune --help`

    found: dict[str, dist.BaseDistribution] = {}
    for key, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        try:
            if key.split(".")[0] not in SECTIONS:
                raise ValueError(key)
            if kind == "categorical" and isinstance(spec.get("choices"), list):
                found[key] = dist.CategoricalDistribution(spec["choices"])
            elif kind in ("float", "int") and all(type(spec.get(end)) in (int, float) for end in ("low", "high")):
                log = bool(spec.get("log", False))
                if kind == "float":
                    found[key] = dist.FloatDistribution(float(spec["low"]), float(spec["high"]), log=log)
                else:
                    found[key] = dist.IntDistribution(int(spec["low"]), int(spec["high"]), log=log)
            else:
                raise ValueError(key)
        except ValueError:
            raise TuneError(
                f"{path}: search_space.{key} must be a model./data./trainer./augment. flag with "
                "{type: float|int, low, high[, log]} (low <= high, low > 0 if log) "
                "or {type: categorical, choices: [...]}"
            ) from None
    return found
