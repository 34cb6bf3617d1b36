"""Image sets in and features out: folders of PNG/JPEG or ``.npz`` arrays, uint8 throughout.

Generated images are quantised to uint8 before they are scored, as real images already are, so both sets
go through the same resize and the same network input (clean-fid's point: a float image and its saved PNG
must score alike).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from harness.errors import DataError
from harness.metrics.distances import frechet_distance, inception_score, kernel_inception_distance
from harness.metrics.inception import ScoringNet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BATCH = 50  # pytorch-fid's default batch


def quantise(images_B3HW: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8, the way a PNG of it would be saved (round to nearest)."""
    return ((images_B3HW.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _npz_images(path: str) -> np.ndarray:
    try:
        with np.load(path) as arrays:
            if not arrays.files:
                raise DataError(f"{path}: an .npz with no arrays")
            images = arrays[arrays.files[0]]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable .npz ({exc})") from None
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[3]):
        raise DataError(f"{path}: expected N x H x W x 3 or N x 3 x H x W images, got shape {images.shape}")
    if images.shape[1] != 3:
        images = images.transpose(0, 3, 1, 2)
    if images.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images (0-255), got {images.dtype}")
    return images


def _read_image(path: str, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: unreadable image ({type(exc).__name__})") from None
    if size is not None and rgb.shape[:2] != size:
        raise DataError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} px, but the set's first image is {size[1]}x{size[0]}")
    return rgb.transpose(2, 0, 1)


def read_image_set(path: str) -> torch.Tensor:
    """uint8 images (N x 3 x H x W) from a folder of PNG/JPEG files (sorted by name, one size) or an .npz
    file (its first array, N x H x W x 3 or N x 3 x H x W). DataError names the path on anything else."""
    if os.path.isfile(path):
        if not path.endswith(".npz"):
            raise DataError(f"{path}: expected a folder of PNG/JPEG images or an .npz file")
        images = _npz_images(path)
    elif os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise DataError(f"{path}: no PNG or JPEG images in this folder")
        first = _read_image(os.path.join(path, names[0]), None)
        images = np.stack([first] + [_read_image(os.path.join(path, n), first.shape[1:]) for n in names[1:]])
    else:
        raise DataError(f"{path}: no such file or folder")
    if len(images) < 2:
        raise DataError(f"{path}: {len(images)} image; FID and KID need at least 2")
    return torch.from_numpy(np.ascontiguousarray(images))


def features(net: ScoringNet, images_B3HW_uint8: torch.Tensor, batch: int = BATCH,
             progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pool features, logits) of every image, as float64 numpy, on the net's device; ``progress`` names a
    tqdm bar."""
    pools, logits = [], []
    starts = range(0, len(images_B3HW_uint8), batch)
    for i in tqdm(starts, desc=progress, unit="batch", disable=progress is None, leave=False):
        pool, logit = net(images_B3HW_uint8[i : i + batch])
        pools.append(pool.cpu())
        logits.append(logit.cpu())
    return torch.cat(pools).numpy(), torch.cat(logits).numpy()


def pool_and_is_logits(net: ScoringNet, classifier: ScoringNet | None, images_B3HW_uint8: torch.Tensor,
                       batch: int = BATCH, progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The FID network's pool features, and the logits IS is computed from: the IS classifier's when there is
    one (data.is_classifier), else the FID network's own."""
    pool, logits = features(net, images_B3HW_uint8, batch, progress)
    if classifier is not None:
        logits = features(classifier, images_B3HW_uint8, batch, progress and f"{progress} (IS classifier)")[1]
    return pool, logits


def scores(fake_pool: np.ndarray, real_pool: np.ndarray | None, fake_logits: np.ndarray | None,
           fid: bool = True, kid: bool = True, isc: bool = True) -> dict[str, float]:
    """The harness's metric names: fid, kid, kid_std, inception_score, inception_score_std."""
    out: dict[str, float] = {}
    if fid and real_pool is not None:
        out["fid"] = frechet_distance(fake_pool, real_pool)
    if kid and real_pool is not None:
        out["kid"], out["kid_std"] = kernel_inception_distance(fake_pool, real_pool)
    if isc and fake_logits is not None:
        out["inception_score"], out["inception_score_std"] = inception_score(fake_logits)
    return out
