"""train_fn_per_worker: one stage of StackGAN training on one Ray Train worker.

The only module that calls ``ray.train.*``. Each worker reads its own data shard; G and D are
wrapped in DDP when there are several workers (gloo on CPU, NCCL on GPU, set up by TorchTrainer).
Rank 0 evaluates, writes the sample grid and the checkpoint; every rank reports each evaluation
(``ray.train.report`` is a barrier). A restarted worker group resumes from the run's latest
complete checkpoint, found under the run's URI, which is named by trial id, never by time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import ray.train
import torch
import torch.distributed as dist

from harness import checkpoint, storage
from harness.config import ResourcesConfig
from harness.data.dataset import open_train_data
from harness.evaluate import (
    chance_fidelity,
    inception_metrics,
    judge_features,
    sample_grid,
    shapes_metrics,
)
from harness.loop import Diverged, LoopSpec, StageLoop
from harness.metrics.image_sets import features as image_features
from harness.metrics.image_sets import quantise
from harness.metrics.inception import load_scoring_net
from harness.run_events import RunEvents
from harness.run_layout import StageLayout
from harness.stage_run import StageRunConfig
from harness.sync_batchnorm import convert_sync_batchnorm
from models import Stage1Generator
from models.config import get_profile

GRID_SAMPLES = 32


def load_stage1_generator(ckpt_uri: str) -> Stage1Generator:
    g, meta = checkpoint.load_generator(ckpt_uri)
    if meta.stage != 1:
        raise ValueError(f"{ckpt_uri}: is a Stage-{meta.stage} checkpoint; Stage-II needs a Stage-I one")
    return g


def _any_rank(flag: bool, world: int) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _report(metrics: dict, report_to: str) -> None:
    if report_to == "tune":  # local mode inside a Tune trial: no Train controller to forward metrics
        from ray import tune

        tune.report(metrics)
    else:
        ray.train.report(metrics)


def _device(setting: str, resources: ResourcesConfig, world: int) -> torch.device:
    """``train.device``: auto trains on the GPU a trial reserves; cpu always on the CPU (GPUs still reserved).
    Ray Train workers get their GPU assigned; local mode uses cuda:0 of what Ray made visible."""
    if setting == "cpu" or (setting == "auto" and not resources.gpus_per_worker):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("resources.gpus_per_worker > 0 but this process sees no CUDA device")
    device = ray.train.torch.get_device() if world > 1 or os.environ.get("CUDA_VISIBLE_DEVICES") else torch.device("cuda", 0)
    if resources.is_gpu_fraction:
        # Trials packed on one card: each may allocate only its share, so one cannot run its neighbours
        # out of memory; past it, this trial alone fails (GpuShareExceeded).
        torch.cuda.set_per_process_memory_fraction(resources.gpus_per_worker, device)
    return device


class GpuShareExceeded(RuntimeError):
    """A trial that shares a GPU needed more memory than its share."""


def _share_exceeded(gpus_per_worker: float, device: torch.device) -> GpuShareExceeded:
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return GpuShareExceeded(
        f"this trial needed more GPU memory than its share: resources.gpus_per_worker {gpus_per_worker} of "
        f"{total_gib:.0f} GiB is {gpus_per_worker * total_gib:.1f} GiB; lower train.batch_size or raise the share")


class RunClock:
    """Wall, CPU and reserved-GPU seconds of one run, carried across resumes (a resumed run starts from
    the totals of the checkpoint it resumes from, not from zero)."""

    def __init__(self, world: int, gpus_per_trial: float, resumed_from: dict | None = None) -> None:
        self.world, self.gpus_per_trial = world, gpus_per_trial
        past = resumed_from or {}
        self.wall0, self.cpu0 = float(past.get("wall_seconds", 0.0)), float(past.get("cpu_seconds", 0.0))
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.started_at = time.time()

    def totals(self) -> dict[str, float]:
        wall = self.wall0 + time.perf_counter() - self.t0
        # CPU time is measured on rank 0 and scaled by the workers; GPU time is what the trial reserved:
        # wall x gpus_per_worker x workers, whatever share of it the kernels kept busy.
        return {"wall_seconds": round(wall, 2),
                "cpu_seconds": round(self.cpu0 + (time.process_time() - self.c0) * self.world, 2),
                "gpu_seconds": round(wall * self.gpus_per_trial, 2),
                # Unix times of this process's training start and of this report: when runs overlapped.
                "started_at": round(self.started_at, 2), "reported_at": round(time.time(), 2)}


def _train_epoch(loop: StageLoop, batches, world: int) -> tuple[dict[str, torch.Tensor], int, str | None]:
    """One epoch of steps: (summed losses as device tensors, steps, why it diverged or None).

    Ranks agree on divergence only where the guard reads its losses (every ``check_every`` steps and at
    the epoch's end): all ranks step in lockstep, so they meet at the same all-reduce."""
    sums: dict[str, torch.Tensor] = {}
    done = 0
    for batch in batches:
        reason = None
        try:
            for k, v in loop.train_step(batch).items():
                sums[k] = sums[k] + v if k in sums else v
        except Diverged as exc:
            reason = str(exc)
        done += 1
        if loop.guard.checked_now() and _any_rank(reason is not None, world):
            return sums, done, reason or "diverged on another worker"
    reason = None
    try:
        loop.guard.check()
    except Diverged as exc:
        reason = str(exc)
    if _any_rank(reason is not None, world):
        return sums, done, reason or "diverged on another worker"
    return sums, done, None


def train_fn_per_worker(config: dict) -> None:
    run: StageRunConfig = config["run"]
    report_to = config["report_to"]
    if report_to == "tune":  # local mode inside a Tune trial, where ray.train.get_context() is unavailable
        rank, world = 0, 1
    else:
        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
    resources = config["resources"]
    torch.set_num_threads(resources.cpus_per_worker)
    if run.train.deterministic:
        torch.use_deterministic_algorithms(True)
    device = _device(run.train.device, resources, world)

    stage1_g = load_stage1_generator(run.stage1_checkpoint) if run.stage == 2 else None
    data = open_train_data(
        run.data.kind, run.dataset_uri, run.data.encoder, stage_resolution(run.spec), rank, world,
        with_words=run.stage == 2 and run.spec.hparams.uses_word_features, seed=run.train.seed, text_norm=run.data.text_norm,
    )
    loop = StageLoop(run.spec, data.text_dim, data.word_dim, device, stage1_g)
    if world > 1:
        distribute(loop, device, run.train.sync_batchnorm)
    loop.compile(run.train.compile)

    start_epoch, resumed_from, history = 0, None, []
    latest = checkpoint.latest(run.layout)
    if latest is not None:
        state, meta = checkpoint.load(latest, map_location=device)
        loop.load_state_dict(state)
        start_epoch = meta.epoch  # checkpoints record completed epochs
        resumed_from = meta.metrics  # the time spent up to that checkpoint is charged again in the totals
        history = [float(v) for v in meta.objective_history]  # a resumed run's window goes on from these
        if rank == 0:
            _restore_lost_evaluation(run.layout, latest, meta)
    if start_epoch >= run.epochs:
        # Restored after it had finished (e.g. the sweep driver died first): report the final
        # result again so Tune records it, without training anything.
        _report(read_latest_metrics(run.layout), report_to)
        return

    evaluator = None
    if rank == 0:
        with torch.random.fork_rng(devices=[]):  # building/loading the judge must not shift training's RNG
            evaluator = _Evaluator(run, data, loop, history)
    batch_size = run.train.batch_size
    steps = data.steps_per_epoch(batch_size)
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} x {world} workers exceeds the training split of {run.dataset_uri}")
    clock = RunClock(world, resources.gpus_per_trial, resumed_from)
    for epoch in range(start_epoch, run.epochs):
        t_epoch = time.perf_counter()
        try:
            sums, done, reason = _train_epoch(loop, data.batches(batch_size, epoch), world)
        except torch.cuda.OutOfMemoryError as exc:
            if device.type == "cuda" and resources.is_gpu_fraction:
                raise _share_exceeded(resources.gpus_per_worker, device) from exc
            raise
        if reason is not None:
            objective = run.objective
            diverged = {"status": "diverged", "reason": reason, "epoch": epoch + 1, "stage": run.stage,
                        objective.metric: objective.worst, objective.key: objective.worst}
            if evaluator is not None:
                evaluator.close()  # earlier checkpoints finish uploading: the best of them stays usable
                write_metrics(run.layout, epoch + 1, diverged)
            _report(diverged, report_to)
            return
        losses = dict(zip(sums, (torch.stack(list(sums.values())) / done).tolist())) if sums else {}
        loop.end_epoch()
        epoch_seconds = time.perf_counter() - t_epoch
        last = epoch + 1 == run.epochs
        if (epoch + 1) % run.train.eval_every and not last:
            continue
        metrics = {"status": "running" if not last else "finished", "epoch": epoch + 1, "stage": run.stage,
                   "epoch_seconds": round(epoch_seconds, 3),
                   "images_per_second": round(steps * batch_size * world / epoch_seconds, 2),
                   **clock.totals(),
                   **{k: round(v, 5) for k, v in losses.items()}}
        if evaluator is not None:
            metrics.update(evaluator.evaluate(epoch + 1, metrics))
        _report(metrics, report_to)
    if evaluator is not None:
        evaluator.close()


def distribute(loop: StageLoop, device: torch.device, sync_batchnorm: bool) -> None:
    """Wraps the loop's G and D in DDP over the process group TorchTrainer set up; with
    ``sync_batchnorm`` their BatchNorm layers first become global-batch ones."""
    ids = [device.index] if device.type == "cuda" else None

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if sync_batchnorm:
            module = convert_sync_batchnorm(module, device)
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    loop.wrap(wrap)


def stage_resolution(spec: LoopSpec) -> int:
    """Image side the stage trains at (resolutions are fixed by the profile, never searched)."""
    profile = get_profile(spec.profile)
    return profile.stage1.image_size if spec.stage == 1 else profile.stage2.image_size


class _Evaluator:
    """Rank 0: metrics on the fixed caption set, the sample grid, TensorBoard events, the checkpoint and
    its retention."""

    def __init__(self, run: StageRunConfig, data, loop: StageLoop, history: list[float]) -> None:
        self.run, self.loop = run, loop
        self.history = list(history)  # the objective's metric at each of the run's evaluations so far
        self.writer = checkpoint.AsyncCheckpointWriter()
        self.eval_set = data.eval_set(run.data.eval_samples, loop.image_size)
        self.judge = self.inception = self.is_classifier = None
        if run.data.kind == "shapes":
            from harness.data.judge import load_or_train_judge

            self.judge, _ = load_or_train_judge(run.dataset_uri)
            self.real_features = judge_features(self.judge, self.eval_set.real_images_B3HW)  # the same every evaluation
        elif run.data.inception_weights:
            self.inception = load_scoring_net(run.data.inception_weights, device=loop.device)
            if run.data.is_classifier:
                self.is_classifier = load_scoring_net(run.data.is_classifier, "data.is_classifier", num_classes=None,
                                                      device=loop.device)
            self.real_pool = image_features(self.inception, quantise(self.eval_set.real_images_B3HW))[0]
        n = min(GRID_SAMPLES, len(self.eval_set.captions))
        if not storage.exists(run.layout.real_grid):  # the same captions' real images, once per run
            storage.write_bytes(run.layout.real_grid, sample_grid(self.eval_set.real_images_B3HW[:n], self.eval_set.captions[:n]))
        objective = run.objective
        shown = list(dict.fromkeys([objective.metric, objective.key] + (["fidelity"] if self.judge is not None else [])))
        self.events = RunEvents(run.layout, {**dataclasses.asdict(run.spec.hparams), "stage": run.stage,
                                             "train_seed": run.train.seed}, shown)

    def close(self) -> None:
        """Waits for the checkpoint uploads still running (re-raising a failed one)."""
        self.writer.wait()
        self.writer.close()

    def evaluate(self, epoch: int, train_metrics: dict) -> dict:
        ev, run = self.eval_set, self.run
        fake, attention = self.loop.sample(ev.text_BD, ev.words_BTD, ev.mask_BT)
        if self.judge is not None:
            metrics = shapes_metrics(self.judge, fake, ev, self.real_features)
            metrics.update({f"chance_{k}": v for k, v in chance_fidelity().items()})
        elif self.inception is not None:
            metrics = inception_metrics(self.inception, fake, self.real_pool, self.is_classifier)
        else:
            metrics = {}
        objective = run.objective
        if objective.metric in metrics:  # the windowed mean the sweep ranks by, beside the raw metric
            self.history.append(float(metrics[objective.metric]))
            metrics[objective.key] = objective.smoothed(self.history)
        grid_uri = run.layout.sample_grid(epoch)
        n = min(GRID_SAMPLES, len(fake))
        grid = sample_grid(fake[:n], ev.captions[:n], None if attention is None else attention[:n])
        storage.write_bytes(grid_uri, grid)
        lrs = {"generator": self.loop.opt_g.param_groups[0]["lr"], "discriminator": self.loop.opt_d.param_groups[0]["lr"]}
        self.events.log(epoch, {k: v for k, v in train_metrics.items() if k not in ("epoch", "stage")},
                        {k: v for k, v in metrics.items() if not k.startswith("chance_")}, lrs, grid)
        all_metrics = {**train_metrics, **metrics, "sample_grid": grid_uri}
        meta = checkpoint.CheckpointMeta(
            stage=run.stage, metrics=all_metrics, config=run.to_dict(), objective_history=list(self.history),
            architecture={"stage1": dataclasses.asdict(self.loop.profile.stage1),
                          "stage2": dataclasses.asdict(self.loop.profile.stage2)})
        # Uploaded in the background (the loop waits only for serialization); retention runs after it.
        ckpt = self.writer.submit(run.layout, epoch, self.loop.state_dict(), meta, after=lambda: checkpoint.prune(
            run.layout, run.train.keep_checkpoints, objective))
        if train_metrics["status"] == "finished":
            self.writer.wait()  # "finished" promises a complete checkpoint: Stage-II or a resume may read it now
        write_metrics(run.layout, epoch, {**all_metrics, "checkpoint_path": ckpt})
        return {**metrics, "sample_grid": grid_uri, "checkpoint_path": ckpt}


def write_metrics(layout: StageLayout, epoch: int, metrics: dict) -> None:
    """Rank 0's report of this evaluation, kept with the run (results.py reads the history back;
    Train V2's Result carries only metrics attached to Ray-managed checkpoints: docs/DESIGN.md)."""
    data = json.dumps(metrics).encode()
    storage.write_bytes(layout.metrics(epoch), data)
    storage.write_bytes(layout.latest_metrics, data)


def _restore_lost_evaluation(layout: StageLayout, ckpt_uri: str, meta: checkpoint.CheckpointMeta) -> None:
    """Writes the evaluation a checkpoint carries when its metrics file never was: a run killed after the checkpoint
    committed and before the metrics were written (the last evaluation writes them once its upload is done; an
    earlier one's write can fail or lag behind the upload, as in an S3 outage) resumes with a complete checkpoint of
    epoch N and metrics only up to an earlier one. Without this, epoch N has no row in results.parquet, and when N
    was the last epoch the restored run reports the earlier evaluation as its final one (status "running"): a
    finished confirmation run counted as stopped early (seen in the chaos soak, a node killed in that gap)."""
    if read_latest_metrics(layout).get("epoch", 0) < meta.epoch:
        write_metrics(layout, meta.epoch, {**meta.metrics, "epoch": meta.epoch, "checkpoint_path": ckpt_uri})


def read_latest_metrics(layout: StageLayout) -> dict:
    return json.loads(storage.read_bytes(layout.latest_metrics)) if storage.exists(layout.latest_metrics) else {}
