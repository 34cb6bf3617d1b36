"""TensorBoard event files of one stage run: every evaluation's losses, metrics and learning rates as
scalars, the sample grid as an image, and the run's hyperparameters for TensorBoard's HParams view.

Written with tensorboardX's synchronous ``EventsWriter`` (its ``SummaryWriter`` queues events on a
thread, and a trial that Tune ends right after its last report would lose them) into a local file,
then copied into the run's ``tensorboard/`` (harness/run_layout.py) through storage.py after every
evaluation: local and S3 runs take the same path, and S3 writes get the storage retries.
``tensorboard --logdir <storage>/<sweep>/trials`` shows every trial, named by its path; a resumed run
adds a second event file beside the first.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image
from tensorboardX import summary as tb
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event

from harness import storage
from harness.run_layout import StageLayout

# Scalars under these prefixes; HParams compares runs on the evaluation metrics.
TRAIN, EVAL, LR = "train/", "eval/", "lr/"


class RunEvents:
    def __init__(self, layout: StageLayout, hparams: dict, metric_names: list[str]) -> None:
        self.layout = layout
        self.local = tempfile.mkdtemp(prefix="harness-tb-")
        self.writer = EventsWriter(os.path.join(self.local, "events"))
        self._write(0, tb.hparams(hparams, {EVAL + m: 0.0 for m in metric_names}))

    def _write(self, step: int, summaries) -> None:
        for summary in summaries:
            self.writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))
        self.writer.flush()

    def log(self, epoch: int, train: dict, metrics: dict, learning_rates: dict, grid_png: bytes) -> None:
        """One evaluation: numbers only (``train`` and ``metrics`` may hold other values, skipped)."""
        summaries = [tb.scalar(prefix + name, value)
                     for prefix, values in ((TRAIN, train), (EVAL, metrics), (LR, learning_rates))
                     for name, value in values.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
        grid = np.asarray(Image.open(io.BytesIO(grid_png)).convert("RGB"))
        summaries.append(tb.image("samples", grid, dataformats="HWC"))
        self._write(epoch, summaries)
        self.upload()

    def upload(self) -> None:
        for name in sorted(os.listdir(self.local)):
            with open(os.path.join(self.local, name), "rb") as f:
                storage.write_bytes(self.layout.tensorboard_file(name), f.read())

    def close(self) -> None:
        self.writer.close()
        self.upload()
        shutil.rmtree(self.local, ignore_errors=True)
