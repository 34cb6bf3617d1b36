"""`inspect`: one JSON summary of a dataset, or a DataError naming the bad file."""

from __future__ import annotations

import os

import numpy as np

from harness.data import cub
from harness.data.shapes_store import read_meta
from harness.errors import DataError


def inspect(kind: str, root: str) -> dict:
    if kind == "shapes":
        meta = read_meta(root)
        return {
            "kind": "shapes",
            "root": root,
            "images": sum(meta["splits"].values()),
            "captions_per_image": meta["captions_per_image"],
            "embedding_dim": meta["encoders"],
            "classes": {a: len(v) for a, v in meta["attributes"].items()},
            "splits": meta["splits"],
            "resolutions": meta["resolutions"],
        }
    if kind not in cub.KINDS:
        raise DataError(f"unknown dataset kind {kind!r}; choose from shapes, cub, flowers")
    splits = {s: cub.load_split(root, kind, s) for s in ("train", "test")}
    boxes = cub.bounding_boxes(root) if kind == "cub" else None
    index = cub.caption_index(root, kind)
    caption_counts = []
    for s in splits.values():
        for key in s.keys:
            caption_counts.append(len(cub.read_captions(root, kind, key, index)))
            if not os.path.isfile(cub.image_path(root, kind, key)):
                raise DataError(f"{cub.image_path(root, kind, key)}: missing image")
            if boxes is not None and key not in boxes:
                raise DataError(f"{root}: no bounding box for {key}")
    dims = {s.embeddings.shape[2] for s in splits.values()}
    if len(dims) != 1:
        raise DataError(f"{root}: train and test embeddings differ in dimension {sorted(dims)}")
    return {
        "kind": kind,
        "root": root,
        "images": sum(len(s.keys) for s in splits.values()),
        "captions_per_image": int(np.median(caption_counts)),
        "embeddings_per_image": int(splits["train"].embeddings.shape[1]),
        "embedding_dim": dims.pop(),
        "classes": int(len(np.unique(np.concatenate([s.class_ids for s in splits.values()])))),
        "splits": {name: len(s.keys) for name, s in splits.items()},
    }
