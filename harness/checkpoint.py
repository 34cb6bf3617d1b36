"""Self-describing checkpoints that are complete or absent.

A checkpoint is a directory ``<run>/checkpoints/epoch-NNNN/`` holding
    state.pt      G, D, both optimizers and schedulers, RNG states (torch.save; loads with weights_only=True)
    meta.json     epoch, stage, metrics, the full run config, the model architecture, the code version
    COMMITTED     written last: a checkpoint without it (a killed upload) is never loaded
Retention keeps the last ``keep`` checkpoints plus the best by the stage metric.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pathlib
import posixpath
import time

import pyarrow.fs as pafs
import torch

from harness import storage
from harness.errors import StorageError

MARKER = "COMMITTED"
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


def _dir(run_uri: str, epoch: int) -> str:
    return storage.join(run_uri, "checkpoints", f"epoch-{epoch:04d}")


def _retry(fn, what: str, attempts: int = 6, first_delay: float = 0.5):
    """Retries transient storage failures with exponential backoff (about 15 s in all)."""
    delay = first_delay
    for attempt in range(attempts):
        try:
            return fn()
        except (OSError, StorageError) as exc:
            if attempt == attempts - 1:
                raise StorageError(f"{what}: failed after {attempts} attempts ({exc})") from exc
            time.sleep(delay)
            delay *= 2


def save(run_uri: str, epoch: int, state: dict, meta: dict) -> str:
    """Writes state and meta, then the marker; returns the checkpoint URI."""
    ckpt = _dir(run_uri, epoch)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    meta = {**meta, "epoch": epoch, "code_version": code_version(), "saved_at": time.time()}
    _retry(lambda: storage.write_bytes(storage.join(ckpt, "state.pt"), payload), f"{ckpt}/state.pt")
    _retry(lambda: storage.write_bytes(storage.join(ckpt, "meta.json"), json.dumps(meta, indent=2).encode()), ckpt)
    _retry(lambda: storage.write_bytes(storage.join(ckpt, MARKER), b"ok\n"), f"{ckpt}/{MARKER}")
    return ckpt


def is_complete(ckpt_uri: str) -> bool:
    return storage.exists(storage.join(ckpt_uri, MARKER))


def list_complete(run_uri: str) -> list[str]:
    """Complete checkpoints of a run, oldest first."""
    root = storage.join(run_uri, "checkpoints")
    fs, path = storage.filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    names = sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)
    return [storage.join(root, n) for n in names if n.startswith("epoch-") and is_complete(storage.join(root, n))]


def latest(run_uri: str) -> str | None:
    done = list_complete(run_uri)
    return done[-1] if done else None


def read_meta(ckpt_uri: str) -> dict:
    if not is_complete(ckpt_uri):
        raise StorageError(f"{ckpt_uri}: not a complete checkpoint (no {MARKER} marker)")
    return json.loads(_retry(lambda: storage.read_bytes(storage.join(ckpt_uri, "meta.json")), ckpt_uri))


def load(ckpt_uri: str, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(state, meta) of a complete checkpoint; refuses a partial one."""
    meta = read_meta(ckpt_uri)
    data = _retry(lambda: storage.read_bytes(storage.join(ckpt_uri, "state.pt")), ckpt_uri)
    state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    return state, meta


def _best_of(checkpoints: list[str], metric: str, mode: str) -> str | None:
    scored = []
    for ckpt in checkpoints:
        value = read_meta(ckpt)["metrics"].get(metric)
        if value is not None:
            scored.append((value if mode == "min" else -value, ckpt))
    return min(scored)[1] if scored else None


def prune(run_uri: str, keep: int, metric: str, mode: str) -> None:
    """Keeps the newest ``keep`` checkpoints and the best by ``metric``; deletes the rest."""
    done = list_complete(run_uri)
    if len(done) <= keep:
        return
    keep_set = set(done[-keep:]) | {_best_of(done, metric, mode)}
    for ckpt in done:
        if ckpt not in keep_set:
            fs, path = storage.filesystem(ckpt)
            fs.delete_file(posixpath.join(path, MARKER))  # first the marker: a half-deleted one is invalid
            fs.delete_dir(path)


def best(run_uri: str, metric: str, mode: str) -> str | None:
    """The run's complete checkpoint with the best ``metric`` (None when none has it)."""
    return _best_of(list_complete(run_uri), metric, mode)
