"""CUB-200 and Oxford-102 in the StackGAN release layout.

``root`` is the dataset directory of the release:
    CUB (birds):  {train,test}/filenames.pickle, char-CNN-RNN-embeddings.pickle, class_info.pickle
                  text_c10/<key>.txt (10 captions), CUB_200_2011/images/<key>.jpg,
                  CUB_200_2011/images.txt, CUB_200_2011/bounding_boxes.txt (x y w h per image id)
    flowers:      the same pickles, jpg/image_xxxxx.jpg, text_c10/class_xxxxx/image_xxxxx.txt, no boxes
The pickles are Python 2 pickles (latin1) and untrusted input: they load through an unpickler that
admits only the builtin and numpy types these files contain.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
from PIL import Image

from harness.errors import DataError

KINDS = ("cub", "flowers")

# (module, name) pairs these files need: numpy arrays (old and new module paths), their dtypes and
# scalars, and plain containers. Anything else -- os.system, eval, subprocess -- is refused.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("_codecs", "encode"),  # how Python 3 writes bytes (array buffers) at protocol 2: text -> bytes only
}
_SAFE_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
                  "bytearray", "bool", "long", "unicode"}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return {"long": int, "unicode": str}.get(name) or getattr(__import__("builtins"), name)
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not an array or a plain container")
        if module == "copy_reg":
            module = "copyreg"
        if module == "__builtin__":
            module = "builtins"
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = module.replace("numpy.core.", "numpy._core.", 1)  # NumPy 2 moved it
        return getattr(__import__(module, fromlist=[name]), name)


def load_pickle(path: str) -> object:
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing file")
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: unsafe or corrupt pickle ({exc})") from exc
    except (EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise DataError(f"{path}: unreadable pickle ({type(exc).__name__}: {exc})") from exc


@dataclasses.dataclass
class ReleaseSplit:
    kind: str
    root: str
    split: str
    keys: list[str]
    embeddings: np.ndarray  # N x captions x D float32
    class_ids: np.ndarray  # N int64


def load_split(root: str, kind: str, split: str) -> ReleaseSplit:
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind {kind!r}; choose from {list(KINDS)} (or shapes)")
    if not os.path.isdir(root):
        raise DataError(f"{root}: missing directory")
    d = os.path.join(root, split)
    names_path = os.path.join(d, "filenames.pickle")
    emb_path = os.path.join(d, "char-CNN-RNN-embeddings.pickle")
    cls_path = os.path.join(d, "class_info.pickle")
    keys = load_pickle(names_path)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DataError(f"{names_path}: expected a list of strings, got {type(keys).__name__}")
    if not keys:
        raise DataError(f"{names_path}: empty list of filenames")
    emb = load_pickle(emb_path)
    try:
        emb = np.asarray(emb, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{emb_path}: not a numeric array ({exc})") from exc
    if emb.ndim == 2:  # one embedding per image
        emb = emb[:, None, :]
    if emb.ndim != 3:
        raise DataError(f"{emb_path}: wrong array shape {emb.shape}, expected N x captions x D")
    if emb.shape[0] != len(keys):
        raise DataError(f"{emb_path}: {emb.shape[0]} embeddings but {len(keys)} filenames in {names_path}")
    classes = np.asarray(load_pickle(cls_path)).astype(np.int64).ravel()
    if classes.shape[0] != len(keys):
        raise DataError(f"{cls_path}: {classes.shape[0]} class ids but {len(keys)} filenames in {names_path}")
    return ReleaseSplit(kind, root, split, keys, emb, classes)


def bounding_boxes(root: str) -> dict[str, tuple[float, float, float, float]]:
    """CUB: key -> (x, y, w, h) from images.txt and bounding_boxes.txt."""
    base = os.path.join(root, "CUB_200_2011")
    images_txt, boxes_txt = os.path.join(base, "images.txt"), os.path.join(base, "bounding_boxes.txt")
    for p in (images_txt, boxes_txt):
        if not os.path.isfile(p):
            raise DataError(f"{p}: missing file")
    id_to_key = {}
    for line in open(images_txt):
        if line.strip():
            image_id, name = line.split()
            id_to_key[image_id] = name.removesuffix(".jpg")
    boxes = {}
    for n, line in enumerate(open(boxes_txt), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5 or parts[0] not in id_to_key:
            raise DataError(f"{boxes_txt}:{n}: expected 'image_id x y w h' with a known image id")
        boxes[id_to_key[parts[0]]] = tuple(float(v) for v in parts[1:])
    return boxes


def image_path(root: str, kind: str, key: str) -> str:
    if kind == "cub":
        return os.path.join(root, "CUB_200_2011", "images", f"{key}.jpg")
    return os.path.join(root, "jpg", f"{os.path.basename(key)}.jpg")


def caption_index(root: str, kind: str) -> dict[str, str]:
    """Flowers keep captions in per-class folders: basename -> caption file, found once."""
    text_dir = os.path.join(root, "text_c10")
    if not os.path.isdir(text_dir):
        raise DataError(f"{text_dir}: missing directory")
    if kind == "cub":
        return {}
    index = {}
    for cls in os.listdir(text_dir):
        for name in os.listdir(os.path.join(text_dir, cls)):
            index[name.removesuffix(".txt")] = os.path.join(text_dir, cls, name)
    return index


def read_captions(root: str, kind: str, key: str, index: dict[str, str] | None = None) -> list[str]:
    if kind == "cub":
        path = os.path.join(root, "text_c10", f"{key}.txt")
    else:
        path = (index or caption_index(root, kind)).get(os.path.basename(key), os.path.join(root, "text_c10", key + ".txt"))
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing caption file for {key}")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines:
        raise DataError(f"{path}: empty caption file")
    return lines


def load_image(path: str, box: tuple[float, float, float, float] | None, load_size: int) -> Image.Image:
    """Square crop of half-size 0.75 * max(w, h) around the box centre, resized to ``load_size``.

    ``load_size`` is imsize * 76 / 64; the random crop to imsize and the flip happen in the dataset.
    """
    try:
        img = Image.open(path)
        img = img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing image") from exc
    except OSError as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from exc
    if box is not None:
        width, height = img.size
        x, y, w, h = box
        r = int(max(w, h) * 0.75)
        cx, cy = int(x + w / 2), int(y + h / 2)
        y1, y2 = max(0, cy - r), min(height, cy + r)
        x1, x2 = max(0, cx - r), min(width, cx + r)
        img = img.crop((x1, y1, x2, y2))
    return img.resize((load_size, load_size), Image.Resampling.BILINEAR)
