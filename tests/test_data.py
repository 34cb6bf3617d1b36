"""The shapes benchmark, its Parquet store, the judge, caption encoders and the CUB/Oxford loader."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness import storage
from harness.data import cub, shapes
from harness.data.dataset import ReleaseData, ShapesData
from harness.data.shapes_store import BuildSpec, build, read_split
from harness.data.text import HashEncoder, tokenize, word_features
from harness.errors import DataError
from tests.conftest import ROOT


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.data", *args], cwd=ROOT, capture_output=True, text=True)


def test_scenes_and_images_are_deterministic():
    for scene_id in range(20):
        a, b = shapes.sample_scene(5, scene_id, 0.5), shapes.sample_scene(5, scene_id, 0.5)
        assert a == b
        assert shapes.png_bytes(shapes.render(a, 64)) == shapes.png_bytes(shapes.render(b, 64))
        assert shapes.captions(a, 5) == shapes.captions(b, 5)
    assert shapes.sample_scene(5, 0) != shapes.sample_scene(6, 0)


def test_build_is_byte_identical_for_the_same_seed(tmp_path):
    spec = BuildSpec(n=40, seed=1, resolutions=(16,), encoders=("hash",), shards=2)
    build(spec, str(tmp_path / "a"), workers=1, log=lambda m: None)
    build(spec, str(tmp_path / "b"), workers=2, log=lambda m: None)
    for name in ("train/part-00000.parquet", "test/part-00001.parquet", "vocab.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_captions_agree_with_attributes():
    lexicon = {
        "shape": {k: set(v) for k, v in shapes.SHAPES.items()},
        "colour": {k: set(v[1]) for k, v in shapes.COLOURS.items()},
        "size": {k: set(v[1]) for k, v in shapes.SIZES.items()},
        "background": {k: set(v[1]) for k, v in shapes.BACKGROUNDS.items()},
    }
    rows = {"top": {"top", "upper"}, "bottom": {"bottom", "lower"}}
    cols = {"left": {"left"}, "right": {"right"}}
    seen_templates = set()
    for scene_id in range(300):
        scene = shapes.sample_scene(0, scene_id)
        truth = scene.attributes
        caps = shapes.captions(scene, 0)
        assert len(caps) == shapes.CAPTIONS_PER_SCENE
        assert set(caps[0][1]) == set(shapes.ATTRIBUTES), "caption 0 must name every attribute"
        for text, mentions in caps:
            seen_templates.add(mentions)
            padded = f" {text} "
            for attr, values in lexicon.items():
                hits = {v for v, words in values.items() if any(f" {w} " in padded or f" {w}," in padded for w in words)}
                if attr in mentions:
                    assert hits == {truth[attr]}, (text, attr, hits)
                else:
                    assert not hits, (text, attr, hits)
            row, col = truth["position"].split()
            tokens = set(tokenize(text))
            if "position" in mentions:
                for name, words in rows.items():
                    assert bool(tokens & words) == (row == name), (text, truth["position"])
                for name, words in cols.items():
                    assert bool(tokens & words) == (col == name), (text, truth["position"])
            else:
                assert not tokens & (set().union(*rows.values(), *cols.values())), text
    assert len(seen_templates) >= 5, "captions must vary in what they leave out"


def test_scene_key_inverts_and_canonical_captions_differ_in_one_value_only():
    for scene_id in range(200):
        attrs = shapes.sample_scene(0, scene_id).attributes
        assert shapes.attributes_of_key(shapes.sample_scene(0, scene_id).key) == attrs
        base = tokenize(shapes.canonical_caption(attrs))
        assert base == tokenize(shapes.canonical_caption(attrs)), "canonical captions are deterministic"
        for name in ("shape", "colour", "size", "background"):
            other = next(v for v in shapes.ATTRIBUTE_VALUES[name] if v != attrs[name])
            changed = tokenize(shapes.canonical_caption({**attrs, name: other}))
            # Equal except the words of the changed value (one word here: every first synonym is one word).
            assert len(changed) == len(base) and sum(a != b for a, b in zip(base, changed)) == 1, (base, changed)
    with pytest.raises(ValueError):
        shapes.attributes_of_key(6 * 8 * 3 * 9 * 4)


def test_parquet_round_trip_and_sharding(shapes_uri):
    full = read_split(shapes_uri, "train", "hash", (16,))
    parts = [read_split(shapes_uri, "train", "hash", (16,), rank=r, world=2) for r in range(2)]
    ids = [set(p.scene_ids.tolist()) for p in parts]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(full.scene_ids.tolist())
    assert full.images[16].shape[1:] == (3, 16, 16) and full.images[16].dtype == np.uint8
    assert full.embeddings.shape == (len(full.scene_ids), 10, 256)
    i = 5
    scene = shapes.sample_scene(3, int(full.scene_ids[i]))
    assert [c for c, _ in shapes.captions(scene, 3)] == full.captions[i]
    assert {a: shapes.ATTRIBUTE_VALUES[a][int(full.attributes[a][i])] for a in shapes.ATTRIBUTES} == scene.attributes
    np.testing.assert_array_equal(
        full.images[16][i], np.asarray(shapes.render(scene, 16)).transpose(2, 0, 1)
    )
    test_ids = set(read_split(shapes_uri, "test", "hash", (16,)).scene_ids.tolist())
    assert not test_ids & set(full.scene_ids.tolist()), "train/test split is by scene"


def test_parquet_round_trip_on_the_s3_endpoint(s3, tmp_path):
    uri = f"s3://{s3.bucket}/datasets/shapes-rt"
    spec = BuildSpec(n=40, seed=2, resolutions=(16,), encoders=("hash",), shards=2)
    build(spec, uri, workers=1, log=lambda m: None)
    build(spec, str(tmp_path / "local"), workers=1, log=lambda m: None)
    remote = read_split(uri, "train", "hash", (16,))
    local = read_split(str(tmp_path / "local"), "train", "hash", (16,))
    np.testing.assert_array_equal(remote.images[16], local.images[16])
    np.testing.assert_array_equal(remote.embeddings, local.embeddings)
    assert remote.captions == local.captions
    assert storage.exists(f"{uri}/meta.json")


def test_shapes_batches_are_reproducible_and_sharded(shapes_uri):
    data = ShapesData(shapes_uri, "hash", 32, rank=0, world=2, with_words=True, seed=1)
    b1 = next(data.batches(8, epoch=3))
    b2 = next(ShapesData(shapes_uri, "hash", 32, rank=0, world=2, with_words=True, seed=1).batches(8, epoch=3))
    torch.testing.assert_close(b1.images_B3HW, b2.images_B3HW)
    torch.testing.assert_close(b1.text_BD, b2.text_BD)
    assert b1.images_B3HW.shape == (8, 3, 32, 32)
    assert -1 <= b1.images_B3HW.min() and b1.images_B3HW.max() <= 1
    assert b1.words_BTD.shape[:2] == b1.mask_BT.shape and b1.mask_BT.any(dim=1).all()
    other = ShapesData(shapes_uri, "hash", 32, rank=1, world=2, seed=1)
    assert data.steps_per_epoch(8) == other.steps_per_epoch(8), "workers must agree on steps (DDP)"


def test_hash_encoder_shapes_and_distinct_captions():
    enc = HashEncoder(dim=64)
    emb = enc.encode_sentences(["a red star at the top", "a blue circle at the bottom", "a red star at the top"])
    assert emb.shape == (3, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert np.allclose(emb[0], emb[2]) and not np.allclose(emb[0], emb[1])
    table = enc.encode_words(["a", "red", "star"])
    words, mask = word_features([[0, 1, 2], [1]], table, max_words=4)
    assert words.shape == (2, 4, 64) and mask.tolist() == [[True, True, True, False], [True, False, False, False]]


@pytest.mark.slow
def test_minilm_encoder_is_the_real_pretrained_model():
    from harness.data.text import MiniLMEncoder

    enc = MiniLMEncoder()
    emb = enc.encode_sentences(["a large crimson star", "a big red star", "a tiny blue circle on black"])
    assert emb.shape == (3, 384)
    # A real sentence model puts the paraphrase closer than the unrelated caption.
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.1
    assert enc.encode_words(["red", "blue"]).shape == (2, 384)


def test_shipped_judge_is_accurate_on_fresh_held_out_scenes(tmp_path):
    from harness.data.judge import SHIPPED_RESOLUTION, accuracy, load_shipped_judge, to_float

    judge = load_shipped_judge(SHIPPED_RESOLUTION)
    uri = str(tmp_path / "fresh")
    # A seed the judge never saw: every scene here is held out.
    build(BuildSpec(n=1000, seed=12345, resolutions=(SHIPPED_RESOLUTION,), encoders=("hash",), shards=1), uri,
          workers=2, log=lambda m: None)
    split = read_split(uri, "train", "hash", (SHIPPED_RESOLUTION,))
    acc = accuracy(judge, to_float(split.images[SHIPPED_RESOLUTION]), split.attributes)
    assert min(acc.values()) >= 0.97, acc


def test_judge_training_is_deterministic(shapes_uri):
    from harness.data.judge import train_judge

    a, report = train_judge(shapes_uri, 32, epochs=1, log=lambda m: None)
    b, _ = train_judge(shapes_uri, 32, epochs=1, log=lambda m: None)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert set(report["heldout_accuracy"]) == set(shapes.ATTRIBUTES)


def test_cub_layout_loads(cub_root):
    split = cub.load_split(str(cub_root), "cub", "train")
    assert len(split.keys) == 6 and split.embeddings.shape == (6, 10, 1024)
    data = ReleaseData(str(cub_root), "cub", 64, loader_workers=0)
    batch = next(data.batches(4, epoch=0))
    assert batch.images_B3HW.shape == (4, 3, 64, 64)
    assert batch.text_BD.shape == (4, 1024)
    ev = data.eval_set(3, 64)
    assert ev.real_images_B3HW.shape == (3, 3, 64, 64) and ev.captions[0].startswith("caption 0")


def test_inspect_command_on_shapes_cub_and_flowers(shapes_uri, cub_root, flowers_root):
    out = _run_cli("inspect", "--kind", "shapes", "--root", shapes_uri)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["images"] == 800 and info["captions_per_image"] == 10 and info["embedding_dim"] == {"hash": 256}
    for kind, root in (("cub", cub_root), ("flowers", flowers_root)):
        out = _run_cli("inspect", "--kind", kind, "--root", str(root))
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert info == {
            "kind": kind, "root": str(root), "images": 10, "captions_per_image": 10, "embeddings_per_image": 10,
            "embedding_dim": 1024, "classes": 6, "splits": {"train": 6, "test": 4},
        }


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/harness-pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(_Exploit(), protocol=2))
    with pytest.raises(DataError, match="refusing to load .*system"):
        cub.load_pickle(str(path))
    assert not os.path.exists("/tmp/harness-pwned")


def _break_embeddings_shape(root):
    with open(root / "train" / "char-CNN-RNN-embeddings.pickle", "wb") as f:
        pickle.dump(np.zeros((6, 2, 3, 4), np.float32), f, protocol=2)
    return "wrong array shape"


def _break_count(root):
    with open(root / "train" / "char-CNN-RNN-embeddings.pickle", "wb") as f:
        pickle.dump(np.zeros((5, 10, 8), np.float32), f, protocol=2)
    return "5 embeddings but 6 filenames"


def _break_image(root):
    next((root / "CUB_200_2011" / "images").rglob("*.jpg")).write_bytes(b"not a jpeg")
    return "unreadable image"


def _break_caption(root):
    next((root / "text_c10").rglob("*.txt")).write_text("\n\n")
    return "empty caption file"


def _remove_pickle(root):
    (root / "test" / "class_info.pickle").unlink()
    return "missing file"


@pytest.mark.parametrize("breaker", [_break_embeddings_shape, _break_count, _break_image, _break_caption, _remove_pickle])
def test_bad_cub_input_gets_one_clear_line(cub_root, breaker):
    expected = breaker(cub_root)
    if breaker is _break_image:  # inspect checks files exist; the image is decoded when loaded
        with pytest.raises(DataError, match=expected):
            data = ReleaseData(str(cub_root), "cub", 64, loader_workers=0)
            [data.items[i] for i in range(len(data.items))]
        return
    out = _run_cli("inspect", "--kind", "cub", "--root", str(cub_root))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_kind_and_missing_dataset(tmp_path):
    out = _run_cli("inspect", "--kind", "cub", "--root", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "missing directory" in out.stderr
    out = _run_cli("inspect", "--kind", "shapes", "--root", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "meta.json: not found" in out.stderr
    with pytest.raises(DataError, match="unknown dataset kind"):
        cub.load_split(str(tmp_path), "coco", "train")
