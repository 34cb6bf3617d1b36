"""Where a sweep's Optuna studies live (one per sweep name and search phase).

Every sweep keeps them: a one-off sweep in ``<sweep>/optuna.journal`` beside its results (for
optuna-dashboard), a nightly sweep in one persistent study that every night continues. Two kinds of home:
- a journal file at any storage URI (``<root>/nightly/optuna/<sweep>.journal`` by default): kept with
  the results, so it needs no database. Optuna's journal backend writes a local file with file
  locks, so an ``s3://`` journal is worked on in a local copy (``MirroredJournalBackend``) that is
  written back after every append: a pod that dies loses at most its running trials. A searcher
  that Tune restores on another machine fetches the journal again. Only one sweep may use a journal
  at a time: nightly runs do not overlap.
- a database URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``): Optuna's RDB storage,
  for several sweeps sharing one study at once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from harness import storage
from harness.phase import Phase

DATABASE_SCHEMES = ("sqlite:", "postgresql", "mysql")


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
        home = storage.read_bytes(uri) if storage.exists(uri) else b""
        with open(self.local_path, "wb") as f:
            f.write(home)
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
        with open(self.local_path, "rb") as f:
            storage.write_bytes(self.uri, f.read())


def _rdb_storage(url: str, attempts: int = 5) -> RDBStorage:
    """Optuna's RDB storage. Its first use creates the schema (its tables, then alembic's version table), and two
    drivers doing it at the same moment on a fresh database collide (PostgreSQL: UniqueViolation on a type name,
    tests/test_study_input.py): the loser tries again once the winner has made it."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts):
        try:
            return RDBStorage(url)
        except (IntegrityError, ProgrammingError):  # ProgrammingError: "relation already exists"
            time.sleep(0.5 * attempt)
    return RDBStorage(url)


class StudyStore:
    def __init__(self, location: str) -> None:
        self.location = location
        self.is_database = location.startswith(DATABASE_SCHEMES)
        self._storage = None

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
