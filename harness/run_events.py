"""TensorBoard event files of one stage run: every evaluation's losses, metrics and learning rates as
scalars, the sample grid as an image, and the run's hyperparameters for TensorBoard's HParams view.

Each evaluation is its own small event file (tensorboardX's synchronous ``EventsWriter``; its
``SummaryWriter`` queues events on a thread, and a trial that Tune ends right after its last report
would lose them), written locally, then copied once into the run's ``tensorboard/``
(harness/run_layout.py) through storage.py: local and S3 runs take the same path, S3 writes get the
storage retries, and no upload repeats an earlier evaluation's bytes. TensorBoard reads a directory's
event files in name order, and the names sort by time, then epoch.
``tensorboard --logdir <storage>/<sweep>/trials`` shows every trial, named by its path.
"""

from __future__ import annotations

import io
import os
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
        # The HParams view's session summaries go into the run's first file of this process.
        self._pending = list(tb.hparams(hparams, {EVAL + m: 0.0 for m in metric_names}))

    def log(self, epoch: int, train: dict, metrics: dict, learning_rates: dict, grid_png: bytes) -> None:
        """One evaluation: numbers only (``train`` and ``metrics`` may hold other values, skipped)."""
        summaries = [tb.scalar(prefix + name, value)
                     for prefix, values in ((TRAIN, train), (EVAL, metrics), (LR, learning_rates))
                     for name, value in values.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
        grid = np.asarray(Image.open(io.BytesIO(grid_png)).convert("RGB"))
        summaries.append(tb.image("samples", grid, dataformats="HWC"))
        with tempfile.TemporaryDirectory(prefix="harness-tb-") as local:
            writer = EventsWriter(os.path.join(local, "events"), filename_suffix=f".epoch{epoch:06d}")
            for summary in self._pending + summaries:
                writer.write_event(Event(wall_time=time.time(), step=epoch, summary=summary))
            writer.close()
            for name in os.listdir(local):
                with open(os.path.join(local, name), "rb") as f:
                    storage.write_bytes(self.layout.tensorboard_file(name), f.read())
        self._pending = []
