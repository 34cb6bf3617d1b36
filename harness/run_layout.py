"""Where every file of a sweep lives: the one module that joins run paths.

    <storage>/<sweep>/                    SweepLayout
        optuna.journal                    the sweep's Optuna studies, one per search phase (optuna-dashboard)
        sweep.json                        what ran: the sweep, its seed, phases, candidates, budget
        tune/<phase>/                     Tune's experiment and searcher state (what --resume restores)
        trials/<trial id>/                TrialLayout: params.json
            stage1/, stage2/              StageLayout: one stage run, also Ray Train's run directory
        train/stage1/, train/stage2/      train.py's runs (StageLayout)
        results.parquet                   one row per trial and evaluation
        report/                           leaderboard.md, leaderboard.html, images/
    <storage>/nightly/                    NightlyLayout
        <date>/<sweep>/                   that night's SweepLayout
        optuna/<sweep>.journal            the study every night adds to
    <storage>/leaderboard/                the nightly leaderboard (harness/leaderboard.py names its files)

A stage run holds ``checkpoints/epoch-NNNN/`` (harness/checkpoint.py owns what is inside one),
``samples/epoch-NNNN.png`` and ``samples/real.png``, ``metrics/epoch-NNNN.json`` plus
``latest_metrics.json``, and ``tensorboard/`` (TensorBoard event files). Runs are named by
trial id and epoch, never by time, so a restarted worker finds its own. Ray Train's own state for a
stage run goes to ``RunConfig(storage_path=layout.storage_root, name=layout.ray_name)``, which is the
same directory: ``StageLayout`` derives both from one relative name.
"""

from __future__ import annotations

import dataclasses

from harness import storage


def _epoch(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


@dataclasses.dataclass(frozen=True)
class StageLayout:
    """One stage run: ``<storage_root>/<ray_name>``."""

    storage_root: str
    ray_name: str  # relative to storage_root: Ray Train's RunConfig name

    @property
    def uri(self) -> str:
        return storage.join(self.storage_root, self.ray_name)

    @property
    def checkpoints_dir(self) -> str:
        return storage.join(self.uri, "checkpoints")

    def checkpoint(self, epoch: int) -> str:
        return storage.join(self.checkpoints_dir, _epoch(epoch))

    def sample_grid(self, epoch: int) -> str:
        return storage.join(self.uri, "samples", f"{_epoch(epoch)}.png")

    @property
    def real_grid(self) -> str:
        """The held-out real images of the sample grids' captions, for comparison."""
        return storage.join(self.uri, "samples", "real.png")

    def tensorboard_file(self, name: str) -> str:
        return storage.join(self.uri, "tensorboard", name)

    @property
    def metrics_dir(self) -> str:
        return storage.join(self.uri, "metrics")

    def metrics(self, epoch: int) -> str:
        return storage.join(self.metrics_dir, f"{_epoch(epoch)}.json")

    @property
    def latest_metrics(self) -> str:
        return storage.join(self.uri, "latest_metrics.json")


def checkpoint_epoch(name: str) -> int | None:
    """The epoch of a directory under ``checkpoints_dir`` named for one (None for anything else)."""
    digits = name.removeprefix("epoch-")
    return int(digits) if digits != name and digits.isdigit() else None


def stage_run(uri: str) -> StageLayout:
    """The layout of the stage run at ``uri`` (its parent directory as the storage root)."""
    uri = uri.rstrip("/")
    root, _, name = uri.rpartition("/")
    return StageLayout(root, name)


@dataclasses.dataclass(frozen=True)
class TrialLayout:
    storage_root: str
    rel: str  # <sweep>/trials/<trial id>

    @property
    def uri(self) -> str:
        return storage.join(self.storage_root, self.rel)

    @property
    def params(self) -> str:
        return storage.join(self.uri, "params.json")

    def stage(self, stage: int) -> StageLayout:
        return StageLayout(self.storage_root, f"{self.rel}/stage{stage}")


@dataclasses.dataclass(frozen=True)
class SweepLayout:
    storage_root: str
    name: str

    @property
    def uri(self) -> str:
        return storage.join(self.storage_root, self.name)

    @property
    def record(self) -> str:
        return storage.join(self.uri, "sweep.json")

    @property
    def study_journal(self) -> str:
        return storage.join(self.uri, "optuna.journal")

    @property
    def tune_dir(self) -> str:
        return storage.join(self.uri, "tune")

    def tune_run(self, phase: str) -> str:
        return storage.join(self.tune_dir, phase)

    @property
    def trials_dir(self) -> str:
        return storage.join(self.uri, "trials")

    def trial(self, trial_id: str) -> TrialLayout:
        return TrialLayout(self.storage_root, f"{self.name}/trials/{trial_id}")

    def train_run(self, stage: int) -> StageLayout:
        """train.py's run of one stage, outside any Tune trial."""
        return StageLayout(self.storage_root, f"{self.name}/train/stage{stage}")

    @property
    def results(self) -> str:
        return storage.join(self.uri, "results.parquet")

    @property
    def final_eval(self) -> str:
        """The papers' protocol, scored once at the end (harness/final_eval.py)."""
        return storage.join(self.uri, "final_eval.json")

    @property
    def report_dir(self) -> str:
        return storage.join(self.uri, "report")

    def report_file(self, name: str) -> str:
        return storage.join(self.report_dir, name)

    def report_image(self, name: str) -> str:
        return storage.join(self.report_dir, "images", name)


@dataclasses.dataclass(frozen=True)
class NightlyLayout:
    storage_root: str

    @property
    def uri(self) -> str:
        return storage.join(self.storage_root, "nightly")

    def night_root(self, date: str) -> str:
        """The storage root of one night's sweep."""
        return storage.join(self.uri, date)

    def night(self, date: str, sweep_name: str) -> SweepLayout:
        return SweepLayout(self.night_root(date), sweep_name)

    def study_journal(self, sweep_name: str) -> str:
        return storage.join(self.uri, "optuna", f"{sweep_name}.journal")

    @property
    def leaderboard_dir(self) -> str:
        return storage.join(self.storage_root, "leaderboard")
