"""The papers' protocol as a final evaluation: FID, KID and IS of each confirmed config's final stage, once.

The per-epoch evaluation is cheap on purpose (data.eval_samples captions, a few hundred images): it ranks
runs, but FID is biased upward at small sample sizes, so its values cannot be put beside a paper's. The
StackGAN papers score about 30,000 images drawn from the test captions. Here, once the sweep has ended,
the last checkpoint of every final-stage confirmation run (each confirmed config, each seed) draws
``data.final_eval_samples`` images (default: one per test caption, 29,330 on CUB), quantised to uint8,
scored against every test image with the standard FID Inception (harness/metrics/). The sweep runs it
as one Ray task (harness/sweep.py); this module is plain torch.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch
from tqdm import tqdm

from harness import checkpoint, storage
from harness.config import SweepConfig
from harness.data import cub
from harness.data.dataset import ReleaseData, ReleaseItems
from harness.metrics.distances import IS_SPLITS, KID_SUBSET_SIZE, KID_SUBSETS, kid_subset_size
from harness.metrics.image_sets import BATCH, pool_and_is_logits, quantise, scores
from harness.metrics.image_sets import features as image_features
from harness.metrics.inception import ScoringNet, load_scoring_net

SCHEMA = 1
NOISE_SEED = 2017  # the final draw's noise: the same for every run, so configs are compared on one draw


@dataclasses.dataclass(frozen=True)
class Published:
    """A paper's figures for one dataset, and where they come from."""

    inception_score: float
    inception_score_sd: float
    fid: float
    source: str


PUBLISHED = {
    "cub": Published(3.70, 0.04, 51.89, "StackGAN, CUB: IS from Zhang et al. 2017, FID from StackGAN++ (Zhang et al. 2018)"),
    "flowers": Published(3.20, 0.01, 55.28, "StackGAN, Oxford-102: IS from Zhang et al. 2017, FID from StackGAN++"),
}


@dataclasses.dataclass(frozen=True)
class FinalRun:
    """One final-stage run to score: a confirmed config's run with one training seed."""

    trial_id: str
    config_id: str
    train_seed: int
    checkpoint: str


@dataclasses.dataclass(frozen=True)
class FinalScore:
    trial_id: str
    config_id: str
    train_seed: int
    checkpoint: str
    fid: float
    kid: float
    kid_std: float
    inception_score: float
    inception_score_std: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class FinalEvaluation:
    """What final_eval.json holds: the protocol, and one score per run."""

    kind: str  # cub | flowers
    samples: int  # generated images per run
    real_images: int  # test images scored as the real set
    network: str  # ScoringNet.describe() of the FID network
    standard_network: bool
    is_classifier: str  # which logits IS used
    scores: tuple[FinalScore, ...]

    @property
    def protocol(self) -> str:
        size = kid_subset_size(self.samples, self.real_images, KID_SUBSET_SIZE)
        return (f"{self.samples:,} images per run from the test captions (one per caption, in caption order), "
                f"uint8, against the {self.real_images:,} test images; {self.network}; KID over {KID_SUBSETS} subsets "
                f"of {size}; IS over {IS_SPLITS} splits with {self.is_classifier}")

    @property
    def comparable(self) -> bool:
        """Whether the scores may stand beside the papers': the standard network, at the papers' sample size."""
        return self.standard_network and self.samples >= 29_000

    @property
    def published(self) -> Published:
        return PUBLISHED[self.kind]

    def by_config(self) -> dict[str, list[FinalScore]]:
        out: dict[str, list[FinalScore]] = {}
        for s in self.scores:
            out.setdefault(s.config_id, []).append(s)
        return out

    def to_json(self) -> bytes:
        return json.dumps({"schema": SCHEMA, **dataclasses.asdict(self)}, indent=2).encode()

    @classmethod
    def load(cls, uri: str) -> FinalEvaluation:
        raw = json.loads(storage.read_bytes(uri))
        if raw.pop("schema", None) != SCHEMA:
            raise ValueError(f"{uri}: not a final_eval.json of schema {SCHEMA}")
        raw["scores"] = tuple(FinalScore(**s) for s in raw["scores"])
        return cls(**raw)


def _test_text(test: cub.ReleaseSplit, data: ReleaseData, samples: int) -> torch.Tensor:
    """The first ``samples`` test captions in caption order (every image's first caption, then every second
    one...), normalised as training normalised them."""
    emb_CND = np.transpose(test.embeddings, (1, 0, 2))
    flat = emb_CND.reshape(-1, emb_CND.shape[-1])
    return data.norm(torch.from_numpy(np.ascontiguousarray(flat[:samples])))


def _real_pool(net: ScoringNet, test: cub.ReleaseSplit, resolution: int) -> np.ndarray:
    items = ReleaseItems(test, resolution, train=False, seed=0)
    pools = []
    for start in tqdm(range(0, len(items), BATCH), desc="final evaluation: real test images", unit="batch"):
        images = torch.stack([items[i][0] for i in range(start, min(start + BATCH, len(items)))])
        pools.append(image_features(net, quantise(images))[0])
    return np.concatenate(pools)


@torch.no_grad()
def _generate(ckpt_uri: str, text_ND: torch.Tensor, device: torch.device, label: str):
    """uint8 images for each caption, from the checkpoint's generator (and its Stage-I parent), in batches."""
    g, meta = checkpoint.load_generator(ckpt_uri)
    g = g.to(device)
    stage1 = checkpoint.load_generator(meta.stage1_checkpoint)[0].to(device) if meta.stage == 2 else None
    rng = torch.Generator().manual_seed(NOISE_SEED)
    for start in tqdm(range(0, len(text_ND), BATCH), desc=label, unit="batch"):
        text = text_ND[start : start + BATCH].to(device)
        if stage1 is None:
            z = torch.randn(len(text), g.cfg.z_dim, generator=rng).to(device)
            images = g(text, z)[0]
        else:
            low = stage1(text, torch.randn(len(text), stage1.cfg.z_dim, generator=rng).to(device))[0]
            z2 = torch.randn(len(text), g.cfg.z_dim, generator=rng).to(device) if g.cfg.z_dim else None
            images = g(low, text, z2).image_B3HW
        yield quantise(images.float().cpu())


def evaluate_runs(runs: list[FinalRun], sweep: SweepConfig, dataset_uri: str, resolution: int,
                  device: str = "cpu") -> FinalEvaluation:
    """Scores each run's final checkpoint by the papers' protocol (module docstring)."""
    dev = torch.device(device)
    net = load_scoring_net(sweep.data.inception_weights, device=dev)
    classifier = (load_scoring_net(sweep.data.is_classifier, "data.is_classifier", num_classes=None, device=dev)
                  if sweep.data.is_classifier else None)
    data = ReleaseData(dataset_uri, sweep.data.kind, resolution, text_norm=sweep.data.text_norm, loader_workers=0)
    test = cub.load_split(dataset_uri, sweep.data.kind, "test")
    captions = test.embeddings.shape[0] * test.embeddings.shape[1]
    samples = min(sweep.data.final_eval_samples or captions, captions)
    text = _test_text(test, data, samples)
    real_pool = _real_pool(net, test, resolution)
    out = []
    for i, run in enumerate(runs, 1):
        t0 = time.perf_counter()
        pools, logits = [], []
        for images in _generate(run.checkpoint, text, dev, f"final evaluation {i}/{len(runs)}: {run.trial_id}"):
            pool, logit = pool_and_is_logits(net, classifier, images)
            pools.append(pool)
            logits.append(logit)
        m = scores(np.concatenate(pools), real_pool, np.concatenate(logits))
        out.append(FinalScore(run.trial_id, run.config_id, run.train_seed, run.checkpoint, m["fid"], m["kid"],
                              m["kid_std"], m["inception_score"], m["inception_score_std"],
                              round(time.perf_counter() - t0, 1)))
    is_with = (f"the classifier {sweep.data.is_classifier}" if classifier is not None
               else "the FID Inception's ImageNet logits (not the papers' fine-tuned classifier)")
    return FinalEvaluation(sweep.data.kind, samples, len(real_pool), net.describe(), net.is_standard, is_with,
                           tuple(out))
