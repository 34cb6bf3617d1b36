"""Where a sweep's Optuna studies live (one per sweep name and search phase).

Every sweep keeps them: a one-off sweep in ``<sweep>/optuna.journal`` beside its results (for
optuna-dashboard), a nightly sweep in one persistent study that every night continues. Two kinds of home:
- a journal file at any storage URI (``<root>/nightly/optuna/<sweep>.journal`` by default): kept with
  the results, so it needs no database. Optuna's journal backend writes a local file with file
  locks, so an ``s3://`` journal is worked on in a local copy (``MirroredJournalBackend``) that is
  written back after every append: a pod that dies loses at most its running trials. A searcher
  that Tune restores on another machine fetches the journal again. One driver at a time uses an
  ``s3://`` journal: it holds the journal's lease (harness/journal_lease.py), a second driver is
  refused while the first runs, and the write-back is conditional on the copy it read.
- a database URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``): Optuna's RDB storage,
  for several sweeps sharing one study at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import tempfile
import time

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from harness import journal_lease, storage
from harness.errors import HarnessError
from harness.phase import Phase

DATABASE_SCHEMES = ("sqlite:", "postgresql", "mysql")
_HOME_ETAG: dict[str, str | None] = {}  # s3:// journal -> the ETag of the copy this process last read or wrote


class JournalConflict(HarnessError):
    """An ``s3://`` journal was written by another driver since this one read it."""


class MirroredJournalBackend(BaseJournalBackend):
    """An Optuna journal whose home is an ``s3://`` object, worked on in a local file.

    The local file is named by the URI in this machine's temp dir, and is replaced by home's copy
    whenever the backend is made or unpickled (a searcher Tune restores on a new pod): home is the
    truth, because every append is written home at once. That is a few small PUTs per trial,
    against trials that take minutes.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        self.local_path = os.path.join(tempfile.gettempdir(), f"harness-optuna-{digest}.journal")
        # Never kept: a leftover from an earlier run under the same URI would pass for tonight's study.
        home = storage.read_versioned(uri)
        _HOME_ETAG[uri] = home.etag  # per process, as the local copy is: every backend of this URI shares both
        with open(self.local_path, "wb") as f:
            f.write(home.data or b"")
        self._file = JournalFileBackend(self.local_path)

    def __getstate__(self) -> dict:
        return {"uri": self.uri}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"])

    def read_logs(self, log_number_from: int):
        return self._file.read_logs(log_number_from)

    def append_logs(self, logs: list[dict]) -> None:
        self._file.append_logs(logs)
        self.push()

    def push(self) -> None:
        """Writes the local copy home, only over the copy it was made from (If-Match on its ETag)."""
        journal_lease.check_held(self.uri)
        with open(self.local_path, "rb") as f:
            data = f.read()
        try:
            _HOME_ETAG[self.uri] = storage.write_if(self.uri, data, _HOME_ETAG.get(self.uri))
        except storage.PreconditionFailed:
            home = storage.read_versioned(self.uri)
            if home.data != data:
                raise JournalConflict(f"{self.uri}: another driver wrote the study journal since this one read it; "
                                      f"not written over (its trials are kept, this driver's latest are not)") from None
            _HOME_ETAG[self.uri] = home.etag  # a retried write of ours that had landed


DATABASE_OUTAGE_S = 120.0  # how long a study database may be away (a restart, a failover) before the driver gives up


class ReconnectingRDBStorage(RDBStorage):
    """Optuna's RDB storage that outlives a database restart.

    Plain RDBStorage keeps pooled connections that a restart has cut, and a call made while the server is down
    fails: either way the night's searcher raises StorageInternalError ("invalid data in the commit") and the Tune
    run ends. Here the pool pings a connection before it lends it (SQLAlchemy's pool_pre_ping), and a call that
    cannot reach the server is retried for up to DATABASE_OUTAGE_S, with one line on stderr. A write retried after
    its commit landed but before the answer came back could be applied twice; a restart makes that rare, and the
    searcher already takes a trial told twice (BudgetAwareOptunaSearch)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, engine_kwargs={"pool_pre_ping": True})


def _unreachable(exc: BaseException) -> bool:
    """A connection that failed or was cut (not a bad statement): worth trying again."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
    return isinstance(cause, (OperationalError, InterfaceError)) or (
        isinstance(cause, DBAPIError) and cause.connection_invalidated)


def _retrying(name: str, method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        from harness.mlflow_log import redacted

        deadline, delay, told = time.monotonic() + DATABASE_OUTAGE_S, 0.5, False
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                if not _unreachable(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StudyUnreachable(f"--study {redacted(self.url)}: the study database has been unreachable for "
                                           f"{DATABASE_OUTAGE_S:.0f} s ({name}); resume the night once it is back") from exc
                if not told:
                    print(f"warning: --study {redacted(self.url)}: the study database is unreachable; retrying for up to "
                          f"{DATABASE_OUTAGE_S:.0f} s", file=sys.stderr, flush=True)
                    told = True
                time.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            if told:
                print(f"--study {redacted(self.url)}: the study database is back", file=sys.stderr, flush=True)
            return result

    return call


# Every call that reaches the database: BaseStorage's API, and the private methods Optuna's _CachedStorage (which
# wraps every RDBStorage a study opens) calls directly.
_CACHE_CALLS = ("_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials", "_set_trial_param")
for _name in [n for n, v in vars(BaseStorage).items() if callable(v) and not n.startswith("_")] + list(_CACHE_CALLS):
    if hasattr(RDBStorage, _name):
        setattr(ReconnectingRDBStorage, _name, _retrying(_name, getattr(RDBStorage, _name)))


class StudyUnreachable(HarnessError):
    """The study database stayed away longer than DATABASE_OUTAGE_S."""


def _rdb_storage(url: str, attempts: int = 5) -> RDBStorage:
    """The study database's storage. Its first use creates the schema (its tables, then alembic's version table),
    and two drivers doing it at the same moment on a fresh database collide (PostgreSQL: UniqueViolation on a type
    name, tests/test_study_input.py): the loser tries again once the winner has made it."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts):
        try:
            return ReconnectingRDBStorage(url)
        except (IntegrityError, ProgrammingError):  # ProgrammingError: "relation already exists"
            time.sleep(0.5 * attempt)
    return ReconnectingRDBStorage(url)


class StudyStore:
    def __init__(self, location: str) -> None:
        self.location = location
        self.is_database = location.startswith(DATABASE_SCHEMES)
        self._storage = None

    def hold(self, holder: str, ttl_s: float = journal_lease.DEFAULT_TTL_S):
        """The lease a driver holds while it uses an ``s3://`` journal (a context manager; LeaseHeld when another
        live driver holds it). Nothing to hold for a local journal (Optuna's file locks) or a database."""
        if storage.is_s3(self.location) and not self.is_database:
            return journal_lease.JournalLease(self.location, holder, ttl_s)
        return contextlib.nullcontext()

    def study_name(self, sweep_name: str, phase: Phase) -> str:
        return f"{sweep_name}-{phase}"

    def storage(self) -> optuna.storages.BaseStorage:
        if self._storage is None:
            if self.is_database:
                self._storage = _rdb_storage(self.location)
            elif storage.is_s3(self.location):
                self._storage = JournalStorage(MirroredJournalBackend(self.location))
            else:
                os.makedirs(os.path.dirname(self.location) or ".", exist_ok=True)
                self._storage = JournalStorage(JournalFileBackend(self.location))
        return self._storage

    def trials(self, study_name: str) -> list[optuna.trial.FrozenTrial]:
        """The study's trials so far ([] when it does not exist yet)."""
        if study_name not in optuna.study.get_all_study_names(self.storage()):
            return []
        return optuna.load_study(study_name=study_name, storage=self.storage()).get_trials(deepcopy=False)

    def prune_unfinished(self, study_name: str) -> int:
        """Tells the study that its trials still RUNNING after a phase's Tune run ended were stopped:
        PRUNED, with the evaluations they reported. Tune's budget stop does not always reach the
        searcher, and a driver killed before Tune saved a trial leaves that trial RUNNING for good.
        Journals only: a database study may be shared by sweeps running now. Returns how many."""
        if self.is_database or study_name not in optuna.study.get_all_study_names(self.storage()):
            return 0
        study = optuna.load_study(study_name=study_name, storage=self.storage())
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for trial in running:
            study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
        return len(running)

    def reset(self, sweep_name: str) -> None:
        """Deletes the sweep's phase studies: a one-off sweep run again under its name starts afresh."""
        for name in optuna.study.get_all_study_names(self.storage()):
            if name.startswith(f"{sweep_name}-"):
                optuna.delete_study(study_name=name, storage=self.storage())

    def count_trials(self, study_name: str) -> int:
        """The study's trials that ended (COMPLETE, PRUNED, FAIL). A RUNNING one may be a dead driver's, left by a
        phase that then starts afresh: it does not mean the start points were evaluated."""
        return sum(t.state != optuna.trial.TrialState.RUNNING for t in self.trials(study_name))
