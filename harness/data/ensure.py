"""Finds a sweep's dataset, building the built-in shapes data on first use."""

from __future__ import annotations

from harness import storage
from harness.config import DataConfig
from harness.data import cub, shapes
from harness.data.shapes_store import BuildSpec, build, read_meta
from models.config import get_profile


def shapes_dataset_uri(storage_root: str, data: DataConfig, resolutions: tuple[int, ...]) -> str:
    res = "-".join(str(r) for r in resolutions)
    return storage.join(storage_root, "datasets", f"shapes-v{shapes.DATASET_VERSION}-n{data.n}-s{data.seed}-{data.encoder}-{res}")


def ensure_dataset(storage_root: str, data: DataConfig, profile: str, log=print) -> str:
    """The dataset URI for ``data``; shapes are built under ``<root>/datasets/`` when missing."""
    if data.kind != "shapes":
        cub.load_split(data.uri, data.kind, "train")  # fail here, before any trial, on a bad root
        return data.uri
    p = get_profile(profile)
    resolutions = tuple(sorted({p.stage1.image_size, p.stage2.image_size}))
    if data.uri:
        read_meta(data.uri)  # a user-built dataset must already exist: fail here, before Ray starts
        return data.uri
    uri = shapes_dataset_uri(storage_root, data, resolutions)
    if storage.exists(storage.join(uri, "meta.json")):
        meta = read_meta(uri)
        if meta["version"] == shapes.DATASET_VERSION:
            return uri
    log(f"building the shapes dataset ({data.n} scenes at {list(resolutions)} px) into {uri} ...")
    build(BuildSpec(n=data.n, seed=data.seed, resolutions=resolutions, encoders=(data.encoder,)), uri, log=log)
    return uri
