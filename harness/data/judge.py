"""A judge for ``shapes``: a small CNN that predicts every attribute of the primary object.

It scores generated images two ways (harness/evaluate.py): caption fidelity (does the predicted
attribute match the caption's?) and FID in its 128-d feature space. It is trained once per dataset
(deterministically, on the train split) and cached beside the dataset as ``judge-<res>px.pt`` with
its held-out accuracy in ``judge-<res>px.json``, so later runs load it in a second.
"""

from __future__ import annotations

import io
import json
import pathlib
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from harness import storage
from harness.data import shapes
from harness.data.shapes_store import read_meta, read_split

FEATURE_DIM = 128
# A judge trained on 20,000 scenes (seed 0) ships with the package: scenes of any seed come from
# the same distribution, so it serves every shapes dataset of this version at this resolution.
# Reproduce it: python -m harness.data build shapes --out DIR --n 20000 --resolutions 64 --encoders hash
#               python -m harness.data judge --root DIR --save-to harness/data/judges
SHIPPED_RESOLUTION = 64
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "judges"


class JudgeNet(nn.Module):
    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.body = nn.Sequential(
            block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 96),
            nn.AdaptiveMaxPool2d(8), block(96, 96),
        )
        # Two views of the 8 x 8 map: a global max (what the object is, wherever it sits) and a
        # coarse spatial map (where it sits). Flattening alone learns shape per position: data-hungry.
        self.where = nn.Sequential(nn.Conv2d(96, 8, 1), nn.ReLU(inplace=True), nn.Flatten())
        self.features_head = nn.Sequential(nn.Linear(96 + 8 * 64, FEATURE_DIM), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict(
            {a: nn.Linear(FEATURE_DIM, len(v)) for a, v in shapes.ATTRIBUTE_VALUES.items()}
        )

    def features(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] at any size -> B x 128 features (resized to the judge's resolution)."""
        if img_B3HW.shape[-1] != self.resolution:
            img_B3HW = nn.functional.interpolate(
                img_B3HW, size=(self.resolution, self.resolution), mode="bilinear", antialias=True, align_corners=False
            )
        fmap = self.body(img_B3HW)
        what = torch.amax(fmap, dim=(2, 3))
        return self.features_head(torch.cat([what, self.where(fmap)], dim=1))

    def forward(self, img_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(img_B3HW)
        return {a: head(f) for a, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, img_B3HW: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
        return self.judge(img_B3HW, batch)[1]

    @torch.no_grad()
    def judge(self, img_B3HW: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B x 128 features, each attribute's predicted index) from one forward pass: evaluation needs
        both, and the body is nearly all of the judge's cost."""
        self.eval()
        features, preds = [], {a: [] for a in self.heads}
        for i in range(0, len(img_B3HW), batch):
            f = self.features(img_B3HW[i : i + batch])
            features.append(f)
            for a, head in self.heads.items():
                preds[a].append(head(f).argmax(1))
        return torch.cat(features), {a: torch.cat(v) for a, v in preds.items()}


def to_float(images_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_uint8).float().div_(127.5).sub_(1.0)


def accuracy(judge: JudgeNet, images: torch.Tensor, attributes: dict[str, np.ndarray]) -> dict[str, float]:
    pred = judge.predict(images)
    return {a: float((pred[a].numpy() == attributes[a]).mean()) for a in shapes.ATTRIBUTE_VALUES}


def train_judge(dataset_uri: str, resolution: int, epochs: int = 6, seed: int = 0, log=print) -> tuple[JudgeNet, dict]:
    """Trains deterministically on the train split; returns (judge, report with held-out accuracy)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    train = read_split(dataset_uri, "train", "hash", (resolution,))
    test = read_split(dataset_uri, "test", "hash", (resolution,))
    x = to_float(train.images[resolution])
    y = {a: torch.from_numpy(v) for a, v in train.attributes.items()}
    judge = JudgeNet(resolution)
    opt = torch.optim.Adam(judge.parameters(), lr=2e-3)
    steps_per_epoch = max(1, len(x) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    bar = tqdm(total=epochs * steps_per_epoch, desc="training the judge", unit="step", disable=None, leave=False)
    for epoch in range(epochs):
        judge.train()
        order = torch.randperm(len(x), generator=gen)
        for step in range(steps_per_epoch):
            idx = order[step * 64 : (step + 1) * 64]
            logits = judge(x[idx])
            loss = sum(loss_fn(logits[a], y[a][idx]) for a in logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    log(f"  judge trained: {epochs} epochs, last loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    acc = accuracy(judge, to_float(test.images[resolution]), test.attributes)
    chance = {a: 1.0 / len(v) for a, v in shapes.ATTRIBUTE_VALUES.items()}
    report = {
        "resolution": resolution,
        "dataset_version": shapes.DATASET_VERSION,
        "train_scenes": len(x),
        "test_scenes": len(test.scene_ids),
        "heldout_accuracy": acc,
        "chance": chance,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return judge.eval(), report


def _paths(dataset_uri: str, resolution: int) -> tuple[str, str]:
    return (
        storage.join(dataset_uri, f"judge-{resolution}px.pt"),
        storage.join(dataset_uri, f"judge-{resolution}px.json"),
    )


def _load(weights_uri: str, report_uri: str, resolution: int) -> tuple[JudgeNet, dict]:
    judge = JudgeNet(resolution)
    judge.load_state_dict(torch.load(io.BytesIO(storage.read_bytes(weights_uri)), weights_only=True))
    return judge.eval(), json.loads(storage.read_bytes(report_uri))


def load_shipped_judge(resolution: int = SHIPPED_RESOLUTION) -> JudgeNet:
    weights, report = _paths(str(SHIPPED_DIR), resolution)
    return _load(weights, report, resolution)[0]


def load_or_train_judge(dataset_uri: str, log=print) -> tuple[JudgeNet, dict]:
    """The dataset's cached judge, else the shipped one (same dataset version), else one trained now
    at the dataset's largest resolution (and cached beside the dataset)."""
    resolutions = sorted(read_meta(dataset_uri)["resolutions"])
    for weights_uri, report_uri in (_paths(dataset_uri, r) for r in resolutions):
        if storage.exists(weights_uri) and storage.exists(report_uri):
            return _load(weights_uri, report_uri, int(json.loads(storage.read_bytes(report_uri))["resolution"]))
    shipped_weights, shipped_report = _paths(str(SHIPPED_DIR), SHIPPED_RESOLUTION)
    if storage.exists(shipped_weights):
        judge, report = _load(shipped_weights, shipped_report, SHIPPED_RESOLUTION)
        if report["dataset_version"] == shapes.DATASET_VERSION:
            return judge, report
    resolution = resolutions[-1]
    log(f"training the shapes judge at {resolution} px (once per dataset) ...")
    judge, report = train_judge(dataset_uri, resolution, log=log)
    save_judge(judge, report, dataset_uri)
    return judge, report


def save_judge(judge: JudgeNet, report: dict, dir_uri: str) -> None:
    weights_uri, report_uri = _paths(dir_uri, judge.resolution)
    buf = io.BytesIO()
    torch.save(judge.state_dict(), buf)
    storage.write_bytes(weights_uri, buf.getvalue())
    storage.write_bytes(report_uri, json.dumps(report, indent=2).encode())
