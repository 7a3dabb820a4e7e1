"""The trials of one ``tune`` worker: each a ``fit`` with suggested flags, scored by its last val_acc.

A trial that fails prints one line and the search goes on, unless its data or a checkpoint failed it once its run
was built (:data:`STUDY_ERRORS`): then every trial would fail the same way, and the worker stops with that error's
line. SIGINT and SIGTERM stop the worker after recording its running trial as interrupted. Imported once Optuna
is known to be installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import optuna  # an optional dependency: this module is imported by `tune` once optuna is found
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna_integration import PyTorchLightningPruningCallback

from mnist_lit.atomic import write_csv
from mnist_lit.commands import storage as st
from mnist_lit.commands.common import build_cli, fit_built, logger_flag, one_line
from mnist_lit.errors import CheckpointError, DataError, IdxError

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


#: Errors that stop the whole study when a trial's fit raises them: unusable data files (missing, not downloadable,
#: damaged) or checkpoints, the same for every trial. Raised while the run is built from the flags (e.g.
#: ``batch_size must be a positive integer``), they depend on the suggested values and fail only that trial.
STUDY_ERRORS = (DataError, IdxError, CheckpointError)


class TrialNotRun(Exception):
    """A trial this worker stopped (interrupted, or beyond the total); recorded in the study, not an error."""


class TrialFailed(Exception):
    """A trial whose run raised; its one-line message is already printed and recorded in the study."""


def suggest(trial: optuna.Trial, key: str, distribution) -> Any:
    """Ask the Optuna ``trial`` for one value of ``key`` from ``distribution`` (a search-space entry as
    :func:`mnist_lit.commands.tune.distributions` gives it)."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(key, distribution.low, distribution.high, log=distribution.log)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[dict[str, int]]:
    """SIGINT and SIGTERM (a scheduler's preemption) raise ``KeyboardInterrupt`` in the main thread, as Ctrl-C
    does, so the running trial is recorded as interrupted; yields ``{"signal": number}`` once one arrived."""
    received: dict[str, int] = {}

    def handler(signum, _frame):
        received["signal"] = signum
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Objective:
    """The objective of ``study.optimize``: one trial's ``fit`` into ``run_dir/trial_N``, its last val_acc.

    Args:
        study: the study (to stop it when the total is reached or a signal arrived).
        space: the search space as Optuna distributions.
        fit_args: the ``fit`` flags of the command line; the suggested ones are appended.
        parser: ``fit``'s parser, for the trial's complete configuration (``best_config.yaml``).
        received: ``{"signal": number}`` of :func:`signals_interrupt`.
    """

    def __init__(
        self,
        study: optuna.Study,
        space: dict[str, BaseDistribution],
        fit_args: list[str],
        parser: ArgumentParser,
        run_dir: Path,
        n_trials: int,
        opts: argparse.Namespace,
        received: dict[str, int],
    ) -> None:
        self.study, self.space, self.fit_args, self.parser = study, space, fit_args, parser
        self.run_dir, self.n_trials, self.opts, self.received = run_dir, n_trials, opts, received
        self.stopped_by: Exception | None = None  # the error of STUDY_ERRORS that stopped the study

    def __call__(self, trial) -> float:
        if self.opts.storage is not None and st.is_surplus(self.study, trial, self.n_trials):
            trial.set_user_attr(st.SURPLUS, True)  # two workers asked at once: beyond the total, not run
            self.study.stop()
            raise TrialNotRun
        flags = [f"--{key}={suggest(trial, key, spec)}" for key, spec in self.space.items()]
        log_dir = self.run_dir / f"trial_{trial.number}"
        trial.set_user_attr(st.WORKER, st.WORKER_ID)
        trial.set_user_attr(st.LOG_DIR, str(log_dir))
        built = False
        try:
            config = self.parser.parse_args([*self.fit_args, *flags])
            trial.set_user_attr(st.CONFIG, self.parser.dump(config, skip_none=False))
            cli = build_cli(
                [*self.fit_args, *flags, logger_flag(self.run_dir, log_dir.name)],
                run=False,
                callbacks=(PyTorchLightningPruningCallback(trial, monitor="val_acc"),),
            )
            built = True  # the suggested values are accepted; from here on the data and checkpoints are read
            return fit_built(cli)
        except optuna.TrialPruned:
            raise
        except (KeyboardInterrupt, SystemExit) as err:  # Lightning turns Ctrl-C into SystemExit(1)
            if self.received or isinstance(err, KeyboardInterrupt):
                self.received.setdefault("signal", signal.SIGINT)
                trial.set_user_attr(st.INTERRUPTED, f"signal {self.received['signal']}")
                self.study.stop()
                raise TrialNotRun from None
            self.fail(trial, f"the run exited with status {err.code}")  # e.g. a suggested value its parser refused
        except Exception as err:
            if built and isinstance(err, STUDY_ERRORS):
                self.stop_study(trial, err)
            self.fail(trial, one_line(err), traceback.format_exc() if self.opts.verbose else "")

    def stop_study(self, trial, err: Exception) -> NoReturn:
        """Record ``err`` as the trial's failure (its traceback printed with ``--verbose``) and stop the study;
        :func:`run_trials` raises ``err`` once Optuna has recorded the trial.

        Raises:
            TrialFailed: always, so that Optuna records the trial as failed and stops.
        """
        trial.set_user_attr(st.ERROR, one_line(err))
        if self.opts.verbose:
            print(traceback.format_exc(), end="", file=sys.stderr, flush=True)
        self.stopped_by = err
        self.study.stop()
        raise TrialFailed from None

    @staticmethod
    def fail(trial, message: str, details: str = "") -> NoReturn:
        """Record and print the one-line ``message`` of a failed trial (and ``details``, its traceback).

        Raises:
            TrialFailed: always, so that Optuna records the trial as failed and the search goes on.
        """
        trial.set_user_attr(st.ERROR, message)
        print(f"trial {trial.number} failed: {message}", file=sys.stderr, flush=True)
        if details:
            print(details, end="", file=sys.stderr, flush=True)
        raise TrialFailed from None


def after_trial(run_dir: Path):
    """The Optuna callback that prints a finished trial's line and rewrites ``trials.csv``."""

    def report(study, trial) -> None:
        if trial.user_attrs.get(st.SURPLUS):
            return
        state = st.trial_state(trial)
        if state == "COMPLETE":
            print(f"trial {trial.number}: val_acc {trial.value:.4f} {json.dumps(trial.params)}", flush=True)
        elif state == "PRUNED":
            epochs = max(trial.intermediate_values, default=0) + 1
            print(f"trial {trial.number}: pruned after epoch {epochs}", flush=True)
        write_trials(study, run_dir)

    return report


def run_trials(study, space, fit_args, parser, run_dir: Path, n_trials: int, opts: argparse.Namespace) -> None:
    """This worker's share of the study: trials until ``n_trials`` counted trials exist (all workers).

    Exits with status 128 + the signal's number after SIGINT or SIGTERM (the trials so far are in
    ``trials.csv``; with ``--storage`` the same command continues the study).

    Raises:
        DataError, IdxError, CheckpointError: a trial's fit raised it (:data:`STUDY_ERRORS`); the trials so far,
            that one failed, are in ``trials.csv``.
    """
    if len(st.counted_trials(study)) >= n_trials:
        print(f"Study {study.study_name!r} already holds {n_trials} trials; nothing to run", flush=True)
        return
    with signals_interrupt() as received:
        objective = Objective(study, space, fit_args, parser, run_dir, n_trials, opts, received)
        try:
            study.optimize(
                objective,
                n_trials=None if opts.storage else n_trials,
                timeout=opts.timeout,
                callbacks=[st.TotalTrials(n_trials), after_trial(run_dir)],
                catch=(TrialNotRun, TrialFailed),
            )
        except KeyboardInterrupt:
            received.setdefault("signal", signal.SIGINT)
        if received:
            write_trials(study, run_dir)
            report_interrupted(study, run_dir, received["signal"], shared=opts.storage is not None)
            sys.exit(128 + int(received["signal"]))
    if objective.stopped_by is not None:  # the data or a checkpoint: every further trial would fail the same way
        raise objective.stopped_by


def report_interrupted(study, run_dir: Path, signum: int, shared: bool) -> None:
    """Print which trials of this worker a signal interrupted and where the others are kept."""
    lost = [
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get(st.INTERRUPTED, "").startswith("signal") and t.user_attrs.get(st.WORKER) == st.WORKER_ID
    ]
    print(
        f"tune interrupted (signal {signum}): trial{'s' if len(lost) != 1 else ''} "
        f"{', '.join(map(str, lost)) or 'none'} lost, the others kept in {run_dir / 'trials.csv'}"
        + ("; run the same command again to continue the study" if shared else ""),
        file=sys.stderr,
    )


#: The columns of ``trials.csv`` before and after the searched parameters.
TRIAL_COLUMNS = (["number", "state", "val_acc", "epochs", "duration_s"], ["worker", "log_dir", "error"])


def trial_row(trial, names: list[str]) -> dict[str, Any]:
    """One row of ``trials.csv``: the trial's number, state, val_acc (the last reported one of an unfinished
    trial), epochs reported, duration in seconds, its value of each parameter in ``names``, worker, folder, error."""
    values = trial.intermediate_values
    value = trial.value if trial.value is not None else (values[max(values)] if values else None)
    finished = trial.datetime_complete
    return {
        "number": trial.number,
        "state": st.trial_state(trial),
        "val_acc": value,
        "epochs": len(values),
        "duration_s": (finished - trial.datetime_start).total_seconds() if finished else None,
        **{key: trial.params.get(key) for key in names},
        "worker": trial.user_attrs.get(st.WORKER),
        "log_dir": trial.user_attrs.get(st.LOG_DIR),
        "error": trial.user_attrs.get(st.ERROR),
    }


def write_trials(study, run_dir: Path) -> list:
    """Write ``trials.csv`` (see :func:`mnist_lit.commands.tune.tune_main`) for the study's trials; returns them
    (surplus ones left out)."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(st.SURPLUS)]
    names = st.study_params(trials)
    before, after = TRIAL_COLUMNS
    write_csv(run_dir / "trials.csv", [*before, *names, *after], (trial_row(t, names) for t in trials))
    return trials
