"""Setup shared by the research probes that train on the shapes dataset outside Ray."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable

import torch

from harness import hyperparams
from harness.config import SweepConfig, load_sweep
from harness.data.dataset import EvalSet, ShapesData
from harness.data.ensure import ensure_dataset
from harness.data.judge import JudgeNet, load_or_train_judge
from harness.data.shapes_store import read_meta
from harness.errors import ConfigError
from harness.loop import LoopSpec
from models.config import get_profile


def pick_device(choice: str) -> torch.device:
    """auto: the GPU when there is one."""
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", default="search_spaces/shapes.yaml", help="a shapes sweep file; its Stage-I defaults train")
    p.add_argument("--storage", default="runs", help="where the dataset lives or is built")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=os.cpu_count())


def add_stage1_arguments(p: argparse.ArgumentParser) -> None:
    """The Stage-I run's overrides: ``--batch-size`` and repeatable ``--param NAME=VALUE``."""
    p.add_argument("--batch-size", type=int, help="override the sweep's train.batch_size")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a Stage-I searched value's default, e.g. kl_weight=0.1 (repeatable)")


def stage1_spec(p: argparse.ArgumentParser, s: ShapesStage1, param_items: list[str] = (),
                batch_size: int | None = None) -> LoopSpec:
    """The sweep's Stage-I loop: its defaults with ``--param NAME=VALUE`` items and a batch-size
    override applied (a usage error names a bad item)."""
    train = dataclasses.replace(s.sweep.train, batch_size=batch_size) if batch_size else None
    return LoopSpec.from_sweep(s.sweep, stage_hparams(p, s.sweep, 1, param_items), train)


def stage_hparams(p: argparse.ArgumentParser, sweep, stage: int, param_items: list[str] = ()):
    """The sweep's defaults for ``stage`` with ``--param NAME=VALUE`` items applied (a usage error names a bad item)."""
    values = sweep.defaults(stage)
    for item in param_items:
        name, _, value = item.partition("=")
        if name not in hyperparams.names(stage) or not value:
            p.error(f"--param {item}: expected NAME=VALUE with NAME one of {', '.join(hyperparams.names(stage))}")
        values[name] = hyperparams.kind(stage, name)(value)
    try:
        return hyperparams.from_sampled(stage, values)
    except ConfigError as exc:
        p.error(f"--param: {exc}")


def train_until(
    data: ShapesData, batch_size: int, steps: int, seconds: float, every: int,
    train_step: Callable, evaluate: Callable[[int, int, float], None], end_epoch: Callable[[], None] = lambda: None,
) -> None:
    """Runs ``train_step(batch)`` over the data's epochs until ``steps`` or ``seconds`` of wall time,
    calling ``evaluate(step, epoch, elapsed_seconds)`` every ``every`` steps and after the last."""
    t0, step, epoch = time.perf_counter(), 0, 0
    while step < steps and time.perf_counter() - t0 < seconds:
        for batch in data.batches(batch_size, epoch):
            train_step(batch)
            step += 1
            last = step >= steps or time.perf_counter() - t0 >= seconds
            if step % every == 0 or last:
                evaluate(step, epoch, time.perf_counter() - t0)
            if last:
                return
        epoch += 1
        end_epoch()


@dataclasses.dataclass
class ShapesStage1:
    sweep: SweepConfig
    device: torch.device
    data: ShapesData
    evals: EvalSet
    judge: JudgeNet


def load(p: argparse.ArgumentParser, args: argparse.Namespace, resolution: int | None = None) -> ShapesStage1:
    """The sweep's Stage-I data (at ``resolution``, default the profile's), held-out captions and judge.

    A non-shapes sweep is a usage error."""
    torch.set_num_threads(args.threads)
    sweep = load_sweep(args.sweep)
    if sweep.data.kind != "shapes":
        p.error(f"--sweep: data.kind is {sweep.data.kind!r}; this needs the shapes dataset")
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731  (stdout is the JSON)
    uri = ensure_dataset(args.storage, sweep.data, sweep.model.profile, log=log)
    resolution = resolution or get_profile(sweep.model.profile).stage1.image_size
    held = read_meta(uri)["resolutions"]
    if resolution not in held:
        p.error(f"--image-size: {uri} holds {held} px, not {resolution}")
    data = ShapesData(uri, sweep.data.encoder, resolution, seed=sweep.train.seed, text_norm=sweep.data.text_norm)
    judge, _ = load_or_train_judge(uri, log=log)
    return ShapesStage1(sweep, pick_device(args.device), data, data.eval_set(sweep.data.eval_samples, resolution), judge)
