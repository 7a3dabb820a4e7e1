"""The Optuna study of ``tune``: created in this process or joined in a shared storage, checked, reported.

Imported by :func:`mnist_lit.commands.tune.tune_main` once Optuna is known to be installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import optuna  # an optional dependency: this module is imported by `tune` once optuna is found
import yaml

from mnist_lit.atomic import write_text
from mnist_lit.commands import storage as st
from mnist_lit.commands.common import build_cli, fresh_run_dir, nested
from mnist_lit.commands.trials import run_trials, write_trials
from mnist_lit.errors import StorageError, TuneError


def open_storage(url: str):
    """:func:`mnist_lit.commands.storage.open_storage`, its refusal as a :class:`TuneError` (one ``error:`` line)."""
    try:
        return st.open_storage(url)
    except StorageError as err:
        raise TuneError(str(err)) from None


def report_stored(url: str, study_name: str, run_dir: Path) -> None:
    """``tune --report``: write ``trials.csv`` and ``best_config.yaml`` of a stored study into ``run_dir``.

    Raises:
        TuneError: the storage holds no such study (its studies are named), or no trial of it completed.
    """
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise TuneError(
            f"no study {study_name!r} in {url} (it holds: {', '.join(names) if names else 'no study'})"
        ) from None
    report_study(study, run_dir)


def search(
    config: dict[str, Any], space: dict[str, Any], n_trials: int, fit_args: list[str], opts: argparse.Namespace
) -> None:
    """Create (or join, with ``--storage``) the study of ``config``'s search space (``space``: its Optuna
    distributions, :func:`mnist_lit.commands.tune.distributions`), run this worker's trials
    (:func:`mnist_lit.commands.trials.run_trials`) and report the study (:func:`report_study`).

    Raises:
        TuneError: an unusable storage, a stored study of another space or direction, no trial completed.
    """
    storage = None if opts.storage is None else open_storage(opts.storage)
    parser = build_cli(fit_args, run=False).parser  # checks the fit flags before any trial runs
    pruner = optuna.pruners.MedianPruner(**config.get("pruner", {}))
    if storage is None:
        run_context: contextlib.AbstractContextManager[Path] = fresh_run_dir(opts.log_dir, "tune")
        sampler = optuna.samplers.TPESampler(seed=config.get("seed", 0))
    else:
        run_dir = Path(opts.log_dir) / f"tune_{opts.study_name}"
        run_dir.mkdir(parents=True, exist_ok=True)
        run_context = contextlib.nullcontext(run_dir)
        # Every worker its own seed (the same one would suggest the same values in every worker).
        seed = zlib.crc32(f"{config.get('seed', 0)}:{st.WORKER_ID}".encode())
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    with run_context as run_dir:
        study = optuna.create_study(
            storage=storage,
            study_name=opts.study_name,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        check_study(study, config["search_space"], opts.storage)
        if storage is not None:
            for number in st.fail_dead_local_trials(study, storage):
                print(f"trial {number}: its worker on this machine is gone; marked interrupted", file=sys.stderr)
        run_trials(study, space, fit_args, parser, run_dir, n_trials, opts)
        report_study(study, run_dir)


def check_study(study, space: dict[str, Any], storage: str | None) -> None:
    """Record the search space in a new study; refuse to join one of another space or direction.

    Raises:
        TuneError: the study minimises, or was created with another search space.
    """
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuneError(f"study {study.study_name!r} in {storage} minimises; give another --study_name")
    recorded = study.user_attrs.get("search_space")
    if recorded is None:
        study.set_user_attr("search_space", space)
    elif recorded != json.loads(json.dumps(space)):
        raise TuneError(
            f"study {study.study_name!r} in {storage} searches another space ({json.dumps(recorded)}); "
            "use its tune config or another --study_name"
        )


def report_study(study, run_dir: Path) -> None:
    """Write ``trials.csv`` and ``best_config.yaml`` of the study into ``run_dir`` and print the summary.

    Raises:
        TuneError: no trial of the study completed.
    """
    trials = write_trials(study, run_dir)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    states = [st.trial_state(t) for t in trials]
    counts = ", ".join(
        f"{states.count(name)} {name.lower()}"
        for name in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED", "RUNNING")
        if states.count(name)
    )
    if not complete:
        first_error = next((t.user_attrs[st.ERROR] for t in trials if st.ERROR in t.user_attrs), None)
        raise TuneError(
            f"no trial completed ({counts or 'no trial'})"
            + (f"; the first failure: {first_error}" if first_error else "")
            + f"; see {run_dir / 'trials.csv'}"
        )
    best = max(complete, key=lambda t: t.value)
    header = (
        f"# Best of {len(trials)} trials (trial {best.number}, val_acc {best.value:.4f}) of "
        f"`python -m mnist_lit tune`; run it with `python -m mnist_lit fit --config THIS_FILE`.\n"
        f"# Searched values: {json.dumps(best.params)}\n"
    )
    write_text(run_dir / "best_config.yaml", header + best.user_attrs["config"])
    print(f"\n{len(trials)} trials: {counts}. Best: trial {best.number}, val_acc {best.value:.4f}")
    print(yaml.safe_dump(nested(best.params), sort_keys=False).rstrip())
    print(
        f"Table: {run_dir / 'trials.csv'}\nBest config: {run_dir / 'best_config.yaml'} "
        f"(python -m mnist_lit fit --config {run_dir / 'best_config.yaml'})"
    )
