"""Builds the ``shapes`` dataset into Parquet shards at a URI and reads a worker's part back.

Layout under the dataset URI (a local path or s3://bucket/prefix):
    meta.json                     kind, version, seed, sizes, resolutions, encoders, shard files
    vocab.parquet                 word, and one word-vector column per encoder (``emb_<name>``)
    {train,test}/part-NNNNN.parquet
        scene_id, key, shape, colour, size, position, background,
        captions (10 strings), mentions (10 bitmasks over ATTRIBUTES), token_ids (10 lists),
        emb_<encoder> (10 x D float16, flattened), image_<res> (PNG bytes)
A worker of rank r in a world of w reads shards r, r + w, ...: only its own part.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from harness import storage
from harness.data import shapes
from harness.data.text import build_vocabulary, get_encoder, token_ids
from harness.errors import DataError

MAX_WORDS = 24  # longest caption of the templates, with a second object, is under this
TEST_EVERY = 10  # every tenth scene is held out: the split is by scene


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    n: int = 20000
    seed: int = 0
    resolutions: tuple[int, ...] = (64, 256)
    encoders: tuple[str, ...] = ("hash", "minilm")
    second_object_prob: float = 0.0
    shards: int = 8

    def __post_init__(self) -> None:
        if self.n < 2 * TEST_EVERY:
            raise DataError(f"n must be at least {2 * TEST_EVERY} scenes, got {self.n}")
        if not self.resolutions or any(r < 8 or r & (r - 1) for r in self.resolutions):
            raise DataError(f"resolutions must be powers of two >= 8, got {self.resolutions}")
        if not 0 <= self.second_object_prob <= 1:
            raise DataError("second_object_prob must be in [0, 1]")


def _split_of(scene_id: int) -> str:
    return "test" if scene_id % TEST_EVERY == TEST_EVERY - 1 else "train"


def _mention_mask(mentions: tuple[str, ...]) -> int:
    return sum(1 << shapes.ATTRIBUTES.index(a) for a in mentions)


def _render_scene(args: tuple[int, int, float, tuple[int, ...]]) -> dict:
    seed, scene_id, second_prob, resolutions = args
    scene = shapes.sample_scene(seed, scene_id, second_prob)
    caps = shapes.captions(scene, seed)
    row = {"scene_id": scene_id, "key": scene.key, **scene.attributes}
    row["captions"] = [c for c, _ in caps]
    row["mentions"] = [_mention_mask(m) for _, m in caps]
    for res in resolutions:
        row[f"image_{res}"] = shapes.png_bytes(shapes.render(scene, res))
    return row


def build(spec: BuildSpec, out_uri: str, workers: int = 2, log=print) -> dict:
    """Renders, captions and encodes ``spec.n`` scenes into ``out_uri``; returns meta (with timings)."""
    t0 = time.perf_counter()
    jobs = [(spec.seed, i, spec.second_object_prob, spec.resolutions) for i in range(spec.n)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        rows = []
        # A bar on a terminal only (disable=None): logs and tests stay quiet.
        for row in tqdm(pool.imap(_render_scene, jobs, chunksize=64), total=spec.n, desc="rendering scenes",
                        unit="scene", disable=None, leave=False):
            rows.append(row)
    t_render = time.perf_counter() - t0

    all_captions = [c for r in rows for c in r["captions"]]
    vocab = build_vocabulary(all_captions)
    index = {w: i for i, w in enumerate(vocab)}
    for r in rows:
        r["token_ids"] = [token_ids(c, index, MAX_WORDS) for c in r["captions"]]
    unique = sorted(set(all_captions))
    vocab_cols: dict[str, object] = {"word": vocab}
    encoder_dims = {}
    for name in spec.encoders:
        t = time.perf_counter()
        encoder = get_encoder(name)
        emb = encoder.encode_sentences(unique)
        lookup = {c: i for i, c in enumerate(unique)}
        for r in rows:
            r[f"emb_{name}"] = emb[[lookup[c] for c in r["captions"]]].astype(np.float16).ravel()
        vocab_cols[f"emb_{name}"] = list(encoder.encode_words(vocab))
        encoder_dims[name] = int(emb.shape[1])
        log(f"  encoded {len(unique)} unique captions with {name} ({time.perf_counter() - t:.0f} s)")

    shard_files: dict[str, list[str]] = {}
    shard_rows: dict[str, list[int]] = {}
    for split in ("train", "test"):
        split_rows = [r for r in rows if _split_of(r["scene_id"]) == split]
        shard_files[split], shard_rows[split] = [], []
        for k in range(spec.shards):
            part = split_rows[k :: spec.shards]
            if not part:
                continue
            name = f"{split}/part-{k:05d}.parquet"
            _write_parquet(storage.join(out_uri, name), pa.Table.from_pylist(part))
            shard_files[split].append(name)
            shard_rows[split].append(len(part))
    _write_parquet(storage.join(out_uri, "vocab.parquet"), pa.table(vocab_cols))
    meta = {
        "kind": "shapes",
        "version": shapes.DATASET_VERSION,
        **dataclasses.asdict(spec),
        "splits": {s: sum(1 for r in rows if _split_of(r["scene_id"]) == s) for s in ("train", "test")},
        "encoders": encoder_dims,
        "max_words": MAX_WORDS,
        "captions_per_image": shapes.CAPTIONS_PER_SCENE,
        "attributes": shapes.ATTRIBUTE_VALUES,
        "shards": shard_files,
        "shard_rows": shard_rows,
        "build_seconds": {"render": round(t_render, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    storage.write_bytes(storage.join(out_uri, "meta.json"), json.dumps(meta, indent=2).encode())
    return meta


def _write_parquet(uri: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(uri, buf.getvalue())


def read_meta(uri: str) -> dict:
    meta_uri = storage.join(uri, "meta.json")
    if not storage.exists(meta_uri):
        raise DataError(f"{meta_uri}: not found (build the dataset with `python -m harness.data build shapes`)")
    try:
        meta = json.loads(storage.read_bytes(meta_uri))
    except json.JSONDecodeError as exc:
        raise DataError(f"{meta_uri}: not valid JSON ({exc})") from exc
    if meta.get("kind") != "shapes":
        raise DataError(f"{meta_uri}: kind is {meta.get('kind')!r}, expected 'shapes'")
    return meta


@dataclasses.dataclass
class ShapesSplit:
    """One worker's part of a split, decoded into arrays (N scenes, 10 captions each)."""

    scene_ids: np.ndarray  # N int64
    keys: np.ndarray  # N int64: same key = same primary attributes
    attributes: dict[str, np.ndarray]  # name -> N int64 value indices (shapes.ATTRIBUTE_VALUES)
    captions: list[list[str]]  # N x 10
    mentions: np.ndarray  # N x 10 int64 bitmasks
    token_ids: list[list[list[int]]]  # N x 10 x (<= MAX_WORDS)
    embeddings: np.ndarray  # N x 10 x D float32
    images: dict[int, np.ndarray]  # resolution -> N x 3 x H x W uint8


def rows_per_worker(meta: dict, split: str, world: int) -> list[int]:
    """Scenes each of ``world`` workers reads: workers must agree on steps per epoch (DDP)."""
    rows = meta["shard_rows"][split]
    return [sum(rows[r::world]) for r in range(world)]


def _float_rows(column: pa.ChunkedArray, n: int) -> np.ndarray:
    """A column of (nested) float lists -> n x (floats per row) float32, through Arrow's buffers: the
    Python-list route took about 4 s per read of the demo's 36,000 embeddings, at every trial's start."""
    flat = column.combine_chunks()
    while pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
        flat = flat.flatten()
    return flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, -1)


def read_split(
    uri: str, split: str, encoder: str, resolutions: tuple[int, ...], rank: int = 0, world: int = 1
) -> ShapesSplit:
    meta = read_meta(uri)
    if encoder not in meta["encoders"]:
        raise DataError(f"{uri}: built without the {encoder!r} encoder (has {sorted(meta['encoders'])})")
    missing = set(resolutions) - set(meta["resolutions"])
    if missing:
        raise DataError(f"{uri}: built without resolutions {sorted(missing)} (has {meta['resolutions']})")
    files = meta["shards"][split][rank::world]
    if not files:
        raise DataError(f"{uri}: split {split!r} has {len(meta['shards'][split])} shards, too few for {world} workers")
    columns = ["scene_id", "key", *shapes.ATTRIBUTES, "captions", "mentions", "token_ids", f"emb_{encoder}"]
    columns += [f"image_{r}" for r in resolutions]
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(storage.join(uri, f))), columns=columns) for f in files]
    t = pa.concat_tables(tables)
    dim = meta["encoders"][encoder]
    n = t.num_rows
    emb = _float_rows(t[f"emb_{encoder}"], n)
    images = {}
    for r in resolutions:
        images[r] = np.stack(
            [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).transpose(2, 0, 1) for b in t[f"image_{r}"].to_pylist()]
        )
    return ShapesSplit(
        scene_ids=t["scene_id"].to_numpy(),
        keys=t["key"].to_numpy(),
        attributes={
            a: np.array([shapes.ATTRIBUTE_VALUES[a].index(v) for v in t[a].to_pylist()], np.int64)
            for a in shapes.ATTRIBUTES
        },
        captions=t["captions"].to_pylist(),
        mentions=np.array(t["mentions"].to_pylist(), np.int64),
        token_ids=t["token_ids"].to_pylist(),
        embeddings=emb.reshape(n, shapes.CAPTIONS_PER_SCENE, dim),
        images=images,
    )


def embedding_table(uri: str, split: str, encoder: str) -> np.ndarray:
    """(N * 10) x D: every caption embedding of a split (only that column is read from the shards)."""
    meta = read_meta(uri)
    column = f"emb_{encoder}"
    rows = []
    for f in meta["shards"][split]:
        t = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(uri, f))), columns=[column])
        rows.append(_float_rows(t[column], t.num_rows).reshape(-1, meta["encoders"][encoder]))
    return np.concatenate(rows)


def read_word_table(uri: str, encoder: str) -> np.ndarray:
    """V x D word vectors of the dataset's vocabulary for ``encoder``."""
    t = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(uri, "vocab.parquet"))), columns=[f"emb_{encoder}"])
    return np.stack([np.asarray(v, np.float32) for v in t[f"emb_{encoder}"].to_pylist()])
