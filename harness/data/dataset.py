"""Training and evaluation data for one data-parallel worker, as batches of tensors.

Both datasets yield the same ``Batch``; the stage loop does not know which it trains on.
- ``ShapesData``: this worker's Parquet shards decoded into memory once; each step draws one of
  the ten captions per image. Order and caption choice derive from (seed, epoch, rank), so a
  resumed run sees exactly the batches an uninterrupted one would.
- ``ReleaseData`` (CUB / Oxford-102): images decoded per item with the release preprocessing
  (box crop, 76/64 resize, random crop, flip); precomputed char-CNN-RNN embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from harness.data import cub, shapes
from harness.data.shapes_store import embedding_table, read_meta, read_split, read_word_table, rows_per_worker
from harness.data.text import word_features
from harness.errors import DataError


@dataclasses.dataclass
class Batch:
    images_B3HW: torch.Tensor  # float in [-1, 1] at the stage's resolution
    text_BD: torch.Tensor  # sentence embedding of the caption drawn for each image
    keys_B: torch.Tensor  # class / attribute key: mismatched captions come from another key
    words_BTD: torch.Tensor | None = None  # per-word features, when attention is on
    mask_BT: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(*(move(getattr(self, f.name)) for f in dataclasses.fields(self)))


@dataclasses.dataclass
class EvalSet:
    """A fixed held-out caption set: the same captions and noise at every evaluation."""

    captions: list[str]
    text_BD: torch.Tensor
    words_BTD: torch.Tensor | None
    mask_BT: torch.Tensor | None
    real_images_B3HW: torch.Tensor  # at the evaluation resolution, for FID
    attributes: dict[str, torch.Tensor] | None  # shapes only: the caption's attribute indices
    mentions_B: torch.Tensor | None  # shapes only: bitmask of attributes the caption names


def _to_float(images_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_uint8).float().div_(127.5).sub_(1.0)


@dataclasses.dataclass(frozen=True)
class TextNorm:
    """Per-dimension standardization of sentence embeddings with the training split's statistics.

    Why: a unit-norm embedding (the hash encoder's, MiniLM's) has entries of about 1/sqrt(D), so
    conditioning augmentation's mean, initialised N(0, 0.02) like every layer, starts ~50x smaller
    than its unit noise and the generator learns to ignore the caption (measured on shapes: only the
    background was ever conditioned). Standardized inputs give mu the scale of the noise from step 0.
    Every worker computes the same statistics (over the whole training split, not its shard).
    """

    mean_D: torch.Tensor | None = None
    std_D: torch.Tensor | None = None

    @classmethod
    def over(cls, table_ND: np.ndarray | None) -> TextNorm:
        if table_ND is None:
            return cls()
        t = torch.from_numpy(np.asarray(table_ND, np.float32))
        return cls(t.mean(0), t.std(0).clamp_min(1e-6))

    def __call__(self, text: torch.Tensor) -> torch.Tensor:
        return text if self.mean_D is None else (text - self.mean_D) / self.std_D


class ShapesData:
    def __init__(
        self, uri: str, encoder: str, resolution: int, rank: int = 0, world: int = 1,
        with_words: bool = False, seed: int = 0, text_norm: str = "none",
    ) -> None:
        self.meta = read_meta(uri)
        self.part = read_split(uri, "train", encoder, (resolution,), rank, world)
        self.images = self.part.images[resolution]  # uint8, converted per batch to save memory
        self.norm = TextNorm.over(embedding_table(uri, "train", encoder) if text_norm == "standardize" else None)
        self.embeddings = self.norm(torch.from_numpy(self.part.embeddings))
        self.keys = torch.from_numpy(self.part.keys)
        self.word_table = read_word_table(uri, encoder) if with_words else None
        self.max_words = self.meta["max_words"]
        self.samples = min(rows_per_worker(self.meta, "train", world))
        self.rank, self.seed = rank, seed
        self.uri, self.encoder = uri, encoder
        self.text_dim = self.embeddings.shape[-1]
        self.word_dim = 0 if self.word_table is None else self.word_table.shape[1]

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.samples // batch_size

    def batches(self, batch_size: int, epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        order = rng.permutation(len(self.images))[: self.samples]
        caption_pick = rng.integers(shapes.CAPTIONS_PER_SCENE, size=len(order))
        for step in range(self.steps_per_epoch(batch_size)):
            idx = order[step * batch_size : (step + 1) * batch_size]
            cap = caption_pick[step * batch_size : (step + 1) * batch_size]
            words = mask = None
            if self.word_table is not None:
                ids = [self.part.token_ids[i][c] for i, c in zip(idx, cap)]
                w, m = word_features(ids, self.word_table, self.max_words)
                words, mask = torch.from_numpy(w), torch.from_numpy(m)
            yield Batch(
                images_B3HW=_to_float(self.images[idx]),
                text_BD=self.embeddings[torch.from_numpy(idx), torch.from_numpy(cap)],
                keys_B=self.keys[torch.from_numpy(idx)],
                words_BTD=words,
                mask_BT=mask,
            )

    def eval_set(self, n: int, resolution: int) -> EvalSet:
        """The first ``n`` test scenes with caption 0, which names every attribute."""
        test = read_split(self.uri, "test", self.encoder, (resolution,))
        n = min(n, len(test.scene_ids))
        return self.eval_draw(test, np.arange(n), np.zeros(n, np.int64), resolution)

    def eval_draw(self, test, scenes_N: np.ndarray, captions_N: np.ndarray, resolution: int) -> EvalSet:
        """An evaluation set of test scenes ``scenes_N`` (a split from read_split), each with its caption
        ``captions_N`` (0-9): other draws than eval_set's, for measuring evaluation noise."""
        words = mask = None
        if self.word_table is not None:
            w, m = word_features([test.token_ids[i][c] for i, c in zip(scenes_N, captions_N)], self.word_table,
                                 self.max_words)
            words, mask = torch.from_numpy(w), torch.from_numpy(m)
        return EvalSet(
            captions=[test.captions[i][c] for i, c in zip(scenes_N, captions_N)],
            text_BD=self.norm(torch.from_numpy(test.embeddings[scenes_N, captions_N])),
            words_BTD=words,
            mask_BT=mask,
            real_images_B3HW=_to_float(test.images[resolution][scenes_N]),
            attributes={a: torch.from_numpy(v[scenes_N]) for a, v in test.attributes.items()},
            mentions_B=torch.from_numpy(test.mentions[scenes_N, captions_N]),
        )


class ReleaseItems(torch.utils.data.Dataset):
    """One split of a release as (image in [-1, 1], one caption embedding, class id): a random crop, flip and
    caption when training, the centre crop and first caption otherwise."""

    def __init__(self, split: cub.ReleaseSplit, resolution: int, train: bool, seed: int) -> None:
        self.split, self.resolution, self.train, self.seed = split, resolution, train, seed
        self.boxes = cub.bounding_boxes(split.root) if split.kind == "cub" else None
        self.load_size = resolution * 76 // 64
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split.keys)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        key = self.split.keys[i]
        box = self.boxes[key] if self.boxes is not None else None
        img = cub.load_image(cub.image_path(self.split.root, self.split.kind, key), box, self.load_size)
        arr = np.asarray(img).transpose(2, 0, 1)
        if self.train:
            x, y = rng.integers(self.load_size - self.resolution + 1, size=2)
            arr = arr[:, y : y + self.resolution, x : x + self.resolution]
            if rng.random() < 0.5:
                arr = arr[:, :, ::-1]
            emb = self.split.embeddings[i, rng.integers(self.split.embeddings.shape[1])]
        else:
            off = (self.load_size - self.resolution) // 2
            arr = arr[:, off : off + self.resolution, off : off + self.resolution]
            emb = self.split.embeddings[i, 0]
        return _to_float(np.ascontiguousarray(arr)), torch.from_numpy(emb), int(self.split.class_ids[i])


class ReleaseData:
    """CUB / Oxford-102 from the release layout; the precomputed embeddings are the text."""

    def __init__(self, root: str, kind: str, resolution: int, rank: int = 0, world: int = 1,
                 with_words: bool = False, seed: int = 0, loader_workers: int = 2, text_norm: str = "none") -> None:
        if with_words:
            raise DataError(f"{root}: the precomputed {kind} embeddings have no word features; turn attention off")
        self.root, self.kind, self.resolution = root, kind, resolution
        self.train_split = cub.load_split(root, kind, "train")
        self.items = ReleaseItems(self.train_split, resolution, train=True, seed=seed)
        self.indices = list(range(rank, len(self.items), world))
        self.samples = len(self.items) // world
        self.rank, self.seed, self.loader_workers = rank, seed, loader_workers
        self.text_dim = self.train_split.embeddings.shape[2]
        self.word_dim = 0
        emb = self.train_split.embeddings
        self.norm = TextNorm.over(emb.reshape(-1, emb.shape[-1]) if text_norm == "standardize" else None)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.samples // batch_size

    def batches(self, batch_size: int, epoch: int) -> Iterator[Batch]:
        self.items.epoch = epoch
        order = np.random.default_rng([self.seed, epoch, self.rank]).permutation(self.indices)[: self.samples]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.items, order.tolist()), batch_size=batch_size, drop_last=True,
            num_workers=self.loader_workers,
        )
        for images, text, classes in loader:
            yield Batch(images, self.norm(text), classes)

    def eval_set(self, n: int, resolution: int) -> EvalSet:
        test = cub.load_split(self.root, self.kind, "test")
        items = ReleaseItems(test, resolution, train=False, seed=self.seed)
        n = min(n, len(items))
        imgs, text, _ = zip(*(items[i] for i in range(n)))
        captions = [cub.read_captions(self.root, self.kind, k)[0] for k in test.keys[:n]]
        return EvalSet(captions, self.norm(torch.stack(text)), None, None, torch.stack(imgs), None, None)


def open_train_data(kind: str, uri: str, encoder: str, resolution: int, rank: int, world: int,
                    with_words: bool, seed: int, text_norm: str = "none"):
    if kind == "shapes":
        return ShapesData(uri, encoder, resolution, rank, world, with_words, seed, text_norm)
    if kind in cub.KINDS:
        if encoder != "precomputed":
            raise DataError(f"{kind} uses the precomputed char-CNN-RNN embeddings: set encoder to 'precomputed'")
        return ReleaseData(uri, kind, resolution, rank, world, with_words, seed, text_norm=text_norm)
    raise DataError(f"unknown dataset kind {kind!r}; choose from shapes, cub, flowers")
