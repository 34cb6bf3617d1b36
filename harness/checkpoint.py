"""Self-describing checkpoints that are complete or absent.

A checkpoint is a directory ``<run>/checkpoints/epoch-NNNN/`` (harness/run_layout.py names it) holding
    state.pt      G, D, both optimizers and schedulers, RNG states (torch.save; loads with weights_only=True)
    meta.json     CheckpointMeta: epoch, stage, metrics, the objective's history, the full run config, the model
                  architecture, the code version, a schema version (another version is refused in one line)
    COMMITTED     written last: a checkpoint without it (a killed upload) is never loaded
Retention keeps the last ``keep`` checkpoints plus the best by the sweep's objective.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import io
import json
import pathlib
import time

import pyarrow.fs as pafs
import torch

from harness import storage
from harness.errors import StorageError
from harness.objective import Objective
from harness.run_layout import StageLayout, checkpoint_epoch

MARKER = "COMMITTED"
META_SCHEMA = 2  # 1: the untyped meta.json before CheckpointMeta (no "schema" key)
_SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """SHA-256 over the project's Python sources: identifies the code even without git (ray job submit)."""
    digest = hashlib.sha256()
    for folder in ("models", "harness"):
        for path in sorted((_SOURCE_ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(_SOURCE_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself (meta.json): enough to resume the run, to build its generator
    without the run's config, and to tell which checkpoint is best."""

    stage: int
    metrics: dict  # the evaluation at this epoch, as reported
    config: dict  # the run's StageRunConfig (stage_run.py to_dict), for the record
    architecture: dict  # {"stage1": Stage1Config fields, "stage2": Stage2Config fields}
    objective_history: list[float]  # the objective's metric at each evaluation so far: a resumed window goes on
    epoch: int = 0  # set by write(): the epochs completed
    code_version: str = ""  # set by write()
    saved_at: float = 0.0  # set by write()

    @property
    def stage1_checkpoint(self) -> str | None:
        """Stage-II: the Stage-I checkpoint it refines."""
        return self.config.get("stage1_checkpoint")

    def to_json(self) -> bytes:
        return json.dumps({"schema": META_SCHEMA, **dataclasses.asdict(self)}, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes, uri: str) -> CheckpointMeta:
        raw = json.loads(data)
        version = raw.pop("schema", 1)
        if version != META_SCHEMA:
            raise StorageError(f"{uri}: checkpoint meta schema {version}, this harness reads {META_SCHEMA} (written by "
                               "another version); resume or read it with that version, or start the run again")
        try:
            return cls(**raw)
        except TypeError as exc:  # a field missing or unknown: not what this schema writes
            raise StorageError(f"{uri}: not a checkpoint meta of schema {META_SCHEMA} ({exc})") from exc


def serialize(state: dict) -> bytes:
    """The checkpoint's bytes: a snapshot, so training may go on changing the tensors afterwards."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def write(run: StageLayout, epoch: int, payload: bytes, meta: CheckpointMeta) -> str:
    """Uploads serialized state and meta, then the marker; returns the checkpoint URI.

    storage retries transient failures; a write that still fails leaves no marker, so the
    checkpoint is never loaded."""
    ckpt = run.checkpoint(epoch)
    meta = dataclasses.replace(meta, epoch=epoch, code_version=code_version(), saved_at=time.time())
    storage.write_bytes(storage.join(ckpt, "state.pt"), payload)
    storage.write_bytes(storage.join(ckpt, "meta.json"), meta.to_json())
    storage.write_bytes(storage.join(ckpt, MARKER), b"ok\n")
    return ckpt


def _copy_tensors(obj):
    """A copy of ``obj`` whose tensors are new CPU tensors (GPU state leaves the card: torch.save needs it on the host)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _copy_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy_tensors(v) for v in obj)
    return obj  # numbers, strings, None: immutable


class AsyncCheckpointWriter:
    """Serializes and uploads checkpoints on a background thread; the training loop waits only for a copy.

    ``submit`` snapshots the state (a copy of every tensor: a memcpy, cheaper than torch.save) and
    returns the URI the checkpoint will have; serialization, upload, then retention run in the
    background, one checkpoint at a time. ``wait`` blocks until everything submitted is complete and
    re-raises an upload's failure: call it before reporting a run finished and before the process exits.
    """

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-upload")
        self._pending: list[concurrent.futures.Future] = []
        self.blocked_seconds = 0.0  # time submit() held the caller, summed

    def submit(self, run: StageLayout, epoch: int, state: dict, meta: CheckpointMeta, after=None) -> str:
        t0 = time.perf_counter()
        self._raise_failures()
        snapshot = _copy_tensors(state)  # training goes on changing the originals in place
        self.blocked_seconds += time.perf_counter() - t0

        def upload():
            ckpt = write(run, epoch, serialize(snapshot), meta)
            if after is not None:
                after()
            return ckpt

        self._pending.append(self._pool.submit(upload))
        return run.checkpoint(epoch)

    def _raise_failures(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()

    def wait(self) -> None:
        t0 = time.perf_counter()
        concurrent.futures.wait(self._pending)
        self.blocked_seconds += time.perf_counter() - t0
        self._raise_failures()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def is_complete(ckpt_uri: str) -> bool:
    return storage.exists(storage.join(ckpt_uri, MARKER))


def list_complete(run: StageLayout) -> list[str]:
    """Complete checkpoints of a run, oldest first."""
    epochs = sorted(e for e in map(checkpoint_epoch, storage.list_names(run.checkpoints_dir, pafs.FileType.Directory))
                    if e is not None)
    return [run.checkpoint(e) for e in epochs if is_complete(run.checkpoint(e))]


def latest(run: StageLayout) -> str | None:
    done = list_complete(run)
    return done[-1] if done else None


def read_meta(ckpt_uri: str) -> CheckpointMeta:
    if not is_complete(ckpt_uri):
        raise StorageError(f"{ckpt_uri}: not a complete checkpoint (no {MARKER} marker)")
    uri = storage.join(ckpt_uri, "meta.json")
    return CheckpointMeta.from_json(storage.read_bytes(uri), uri)


def load(ckpt_uri: str, map_location: str | torch.device = "cpu") -> tuple[dict, CheckpointMeta]:
    """(state, meta) of a complete checkpoint; refuses a partial one."""
    meta = read_meta(ckpt_uri)
    data = storage.read_bytes(storage.join(ckpt_uri, "state.pt"))
    state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    return state, meta


def load_generator(ckpt_uri: str) -> tuple[torch.nn.Module, CheckpointMeta]:
    """The generator a checkpoint was evaluated as, in eval mode: its moving average when the run kept one
    (train.g_ema), else the trained weights. A later stage refines it; the final evaluation samples it."""
    from models import Stage1Config, Stage1Generator, Stage2Config, Stage2Generator

    state, meta = load(ckpt_uri)
    cls, cfg = (Stage1Generator, Stage1Config) if meta.stage == 1 else (Stage2Generator, Stage2Config)
    g = cls(cfg(**meta.architecture[f"stage{meta.stage}"]))
    g.load_state_dict(state["generator_ema"]["module"] if "generator_ema" in state else state["generator"])
    return g.eval(), meta


def _best_of(checkpoints: list[str], objective: Objective) -> str | None:
    scored = [(ckpt, objective.value_of(read_meta(ckpt).metrics)) for ckpt in checkpoints]
    best_scored = objective.best(scored, lambda pair: pair[1])
    return best_scored[0] if best_scored else None


def prune(run: StageLayout, keep: int, objective: Objective) -> None:
    """Keeps the newest ``keep`` checkpoints and the best by ``objective``; deletes the rest."""
    done = list_complete(run)
    if len(done) <= keep:
        return
    keep_set = set(done[-keep:]) | {_best_of(done, objective)}
    for ckpt in done:
        if ckpt not in keep_set:
            storage.delete(storage.join(ckpt, MARKER))  # first the marker: a half-deleted one is invalid
            storage.delete(ckpt)


def copy(src: str, dst: str) -> None:
    """Copies a complete checkpoint to ``dst``: the old marker there goes first and the new one last,
    so ``dst`` is never a loadable mix of two checkpoints."""
    storage.delete(storage.join(dst, MARKER))
    names = storage.list_names(src, pafs.FileType.File)
    for name in [n for n in names if n != MARKER] + [MARKER]:
        storage.write_bytes(storage.join(dst, name), storage.read_bytes(storage.join(src, name)))


def best(run: StageLayout, objective: Objective) -> str | None:
    """The run's complete checkpoint with the best ``objective`` value (None when none has it)."""
    return _best_of(list_complete(run), objective)
