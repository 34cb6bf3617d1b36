"""Where a persistent Optuna study lives between sweeps (one per sweep name and phase).

Two kinds of home:
- a journal file at any storage URI (``<root>/nightly/optuna/<sweep>.journal`` by default): kept with
  the results, so it needs no database. Optuna's journal backend writes a local file with file
  locks, so an ``s3://`` journal is copied to a local file while the sweep runs and written back
  after each phase (``sync``). Only one sweep may use a journal at a time: nightly runs do not overlap.
- a database URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``): Optuna's RDB storage,
  for several sweeps sharing one study at once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from harness import storage

DATABASE_SCHEMES = ("sqlite:", "postgresql", "mysql")


class StudyStore:
    def __init__(self, location: str) -> None:
        self.location = location
        self.is_database = location.startswith(DATABASE_SCHEMES)
        self._storage = None
        self._local_path: str | None = None

    def study_name(self, sweep_name: str, phase: str) -> str:
        return f"{sweep_name}-{phase}"

    def storage(self) -> optuna.storages.BaseStorage:
        if self._storage is None:
            if self.is_database:
                self._storage = RDBStorage(self.location)
            else:
                self._storage = JournalStorage(JournalFileBackend(self._fetch_journal()))
        return self._storage

    def _fetch_journal(self) -> str:
        if not storage.is_s3(self.location):
            os.makedirs(os.path.dirname(self.location) or ".", exist_ok=True)
            self._local_path = self.location
            return self._local_path
        # A fixed local name per URI: a restored Tune searcher (--resume) finds the same file again.
        digest = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        self._local_path = os.path.join(tempfile.gettempdir(), f"harness-optuna-{digest}.journal")
        data = storage.read_bytes(self.location) if storage.exists(self.location) else b""
        with open(self._local_path, "wb") as f:
            f.write(data)
        return self._local_path

    def sync(self) -> None:
        """Writes a copied journal back to its home (a no-op for local files and databases)."""
        if self._local_path is not None and storage.is_s3(self.location):
            with open(self._local_path, "rb") as f:
                storage.write_bytes(self.location, f.read())

    def trials(self, study_name: str) -> list[optuna.trial.FrozenTrial]:
        """The study's trials so far ([] when it does not exist yet)."""
        if study_name not in optuna.study.get_all_study_names(self.storage()):
            return []
        return optuna.load_study(study_name=study_name, storage=self.storage()).get_trials(deepcopy=False)

    def count_trials(self, study_name: str) -> int:
        return len(self.trials(study_name))
