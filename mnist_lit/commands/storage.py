"""Optuna storages for a study that several ``tune`` workers share (one machine or many).

``--storage`` names either a file path, opened as Optuna's journal (``JournalStorage`` with a
``JournalFileBackend``: an append-only log with file locks, for one machine or a shared file system),
or any SQLAlchemy URL that Optuna's ``RDBStorage`` accepts (``postgresql+psycopg://user@host/db`` for
many machines; ``sqlite:///file.db``). Optuna does the sharing: trial numbers are handed out by the
storage, the sampler and the pruner read every worker's trials from it.

What Optuna leaves to the caller, and this module adds:

* **a total over all workers.** Optuna's ``MaxTrialsCallback`` counts trials by state only, and an
  interrupted trial is ``FAIL`` like one whose run raised; :func:`counted_trials` counts the trials that
  ran or run (complete, pruned, running, waiting, and failed ones that recorded their error), so a
  lost trial is run again by whoever continues the study.
* **trials of dead workers.** ``RDBStorage`` gets a heartbeat (Optuna marks a trial whose worker stopped
  beating ``FAIL`` after :data:`GRACE_PERIOD_S`); the journal has none, so :func:`fail_dead_local_trials`
  marks the running trials of workers on this machine whose process is gone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import optuna  # an optional dependency: this module is imported by `tune` once optuna is found
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError, ProgrammingError  # SQLAlchemy: a dependency of optuna

from mnist_lit.errors import StorageError

#: Seconds between heartbeats of a running trial in an RDB storage, and after how many seconds without
#: one Optuna takes its worker for dead (``RDBStorage(heartbeat_interval=..., grace_period=...)``).
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120

#: Trial user attributes this project sets (besides Optuna's own fields).
ERROR, INTERRUPTED, SURPLUS = "error", "interrupted", "surplus"
WORKER, LOG_DIR, CONFIG = "worker", "log_dir", "config"

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def is_url(storage: str) -> bool:
    """Whether ``storage`` is a database URL (``dialect[+driver]://...``) rather than a journal file path."""
    return "://" in storage


def open_storage(storage: str):
    """Open ``storage`` (a journal file path or an SQLAlchemy URL) as an Optuna storage object.

    A ``postgresql://`` URL without a driver uses ``psycopg`` (version 3, in the ``tune`` extra) when
    SQLAlchemy's default driver ``psycopg2`` is not installed: the same database, another client library.

    Raises:
        StorageError: the path is a folder or a file that is not an Optuna journal; the database
            cannot be reached or its driver is missing (the first line of the driver's error is kept).
    """
    if not is_url(storage):
        path = Path(storage)
        if path.is_dir():
            raise StorageError(f"--storage {storage} is a folder; give a journal file path, e.g. {path / 'study.log'}")
        check_journal(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    url = storage
    if url.startswith("postgresql://") and not _importable("psycopg2") and _importable("psycopg"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        return _rdb_storage(url)
    except ModuleNotFoundError as err:
        raise StorageError(
            f"--storage {storage}: the database driver {err.name!r} is not installed; "
            "pip install 'mnist_lit[tune]' (PostgreSQL: postgresql+psycopg://...)"
        ) from None
    except Exception as err:  # SQLAlchemy's ArgumentError, OperationalError, ...: a long multi-line text
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise StorageError(f"--storage {storage}: cannot open the database ({type(err).__name__}: {first})") from None


def _rdb_storage(url: str, attempts: int = 5):
    """``optuna.storages.RDBStorage(url)`` with a heartbeat, retried when another worker creates the tables.

    Workers started together on a new database all create Optuna's tables; PostgreSQL's
    ``CREATE TABLE IF NOT EXISTS`` is not atomic against a concurrent one, and the loser fails with a
    unique violation on ``pg_type_typname_nsp_index`` (or ``DuplicateTable``). A retry finds the tables.
    """
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # "heartbeat_interval is an experimental feature": nothing to act on
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S
                )
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    raise AssertionError("unreachable")


def check_journal(path: Path) -> None:
    """Refuse an existing non-empty file whose first line is not an Optuna journal record (JSON with ``op_code``),
    before Optuna appends to it (e.g. a config file given to ``--storage`` by mistake)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as handle:
        first = handle.readline(65536)
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise StorageError(
            f"--storage {path} exists and is not an Optuna journal file; give a new file name "
            "(or the journal the workers share)"
        )


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def counted(trial) -> bool:
    """Whether a trial counts towards ``--n_trials``: it ran, runs or waits to run; a ``FAIL`` counts only
    when the run itself failed (recorded :data:`ERROR`), not when its worker was interrupted or died."""
    return trial.state != TrialState.FAIL or ERROR in trial.user_attrs


def counted_trials(study) -> list:
    """The study's trials that count towards the total (:func:`counted`), in trial-number order."""
    return [t for t in study.get_trials(deepcopy=False) if counted(t)]


class TotalTrials:
    """Optuna callback: stop this worker once the study holds ``n_trials`` counted trials (all workers together).

    Like ``optuna.study.MaxTrialsCallback(n_trials, states=None)``, with :func:`counted` instead of a set
    of states (see the module docstring). Called after each of this worker's trials; a trial that one
    worker starts while another's check runs is caught by :func:`is_surplus`.
    """

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study, trial) -> None:
        if len(counted_trials(study)) >= self.n_trials:
            study.stop()


def is_surplus(study, trial, n_trials: int) -> bool:
    """Whether ``trial`` is beyond the total: ``n_trials`` counted trials with smaller numbers exist.

    Trial numbers are handed out by the storage, unique and increasing, so the first ``n_trials``
    counted trials are the study's and any later one (two workers asked at the same moment) is not run.
    """
    return sum(1 for t in counted_trials(study) if t.number < trial.number) >= n_trials


def fail_dead_local_trials(study, storage) -> list[int]:
    """Mark ``FAIL`` (interrupted) the running trials of workers on this machine whose process is gone.

    A worker killed with ``SIGKILL`` (or by the out-of-memory killer) leaves its trial ``RUNNING`` in a
    journal file forever, counted towards the total; restarting a worker on the same machine releases
    it. Trials of other machines are left to their workers (an RDB storage's heartbeat covers them).

    Returns:
        the numbers of the trials marked.
    """
    host = socket.gethostname()
    marked = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name, _, pid = str(trial.user_attrs.get(WORKER, "")).rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, "its worker process was gone")
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            marked.append(trial.number)
        except Exception:  # another worker marked it first (optuna's UpdateFinishedTrialError)
            continue
    return marked


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trial_state(trial) -> str:
    """``COMPLETE``, ``PRUNED``, ``RUNNING``, ``FAIL`` (the run raised) or ``INTERRUPTED`` (its worker stopped)."""
    if trial.state == TrialState.FAIL and ERROR not in trial.user_attrs:
        return "INTERRUPTED"
    return trial.state.name


def study_params(trials: list) -> list[str]:
    """The parameter names of ``trials``, in the order they first appear."""
    names: dict[str, Any] = {}
    for trial in trials:
        names.update(dict.fromkeys(trial.params))
    return list(names)
