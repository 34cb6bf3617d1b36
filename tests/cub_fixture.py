"""Writes a tiny dataset in exactly the StackGAN release layout (CUB birds or Oxford flowers)."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
from PIL import Image

EMB_DIM = 1024


def make(root: pathlib.Path, kind: str = "cub", per_split: dict[str, int] | None = None) -> pathlib.Path:
    per_split = per_split or {"train": 6, "test": 4}
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    image_lines, box_lines, image_id = [], [], 1
    for split, n in per_split.items():
        keys, classes = [], []
        for i in range(n):
            cls = 1 + (i % 3) + (0 if split == "train" else 3)
            if kind == "cub":
                key = f"{cls:03d}.Bird_{cls}/Bird_{cls}_{split}_{i:04d}_{100 + i}"
                img_path = root / "CUB_200_2011" / "images" / f"{key}.jpg"
                text_path = root / "text_c10" / f"{key}.txt"
                image_lines.append(f"{image_id} {key}.jpg")
                box_lines.append(f"{image_id} 10.0 12.0 60.0 40.0")
                image_id += 1
            else:
                number = 1000 * (split == "test") + i + 1
                key = f"jpg/image_{number:05d}"
                img_path = root / "jpg" / f"image_{number:05d}.jpg"
                text_path = root / "text_c10" / f"class_{cls:05d}" / f"image_{number:05d}.txt"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(img_path)
            text_path.parent.mkdir(parents=True, exist_ok=True)
            text_path.write_text("\n".join(f"caption {j} of a class {cls} thing" for j in range(10)) + "\n")
            keys.append(key)
            classes.append(cls)
        d = root / split
        d.mkdir()
        # Protocol 2 with latin1-compatible content, as the Python 2 release pickles are.
        with open(d / "filenames.pickle", "wb") as f:
            pickle.dump(keys, f, protocol=2)
        with open(d / "char-CNN-RNN-embeddings.pickle", "wb") as f:
            pickle.dump(rng.standard_normal((n, 10, EMB_DIM)).astype(np.float32), f, protocol=2)
        with open(d / "class_info.pickle", "wb") as f:
            pickle.dump(classes, f, protocol=2)
    if kind == "cub":
        (root / "CUB_200_2011" / "images.txt").write_text("\n".join(image_lines) + "\n")
        (root / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(box_lines) + "\n")
    return root
