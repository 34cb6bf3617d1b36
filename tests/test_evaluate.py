"""Evaluation: FID against closed forms, caption fidelity on real images, Inception metrics, grids."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.dataset import ShapesData
from harness.data.judge import load_shipped_judge
from harness.evaluate import (
    caption_fidelity,
    chance_fidelity,
    conditioning,
    inception_metrics,
    sample_grid,
)
from harness.metrics.distances import frechet_distance
from harness.metrics.image_sets import features, quantise
from harness.metrics.inception import load_scoring_net


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(m, 4 I): |m|^2 + Tr(I + 4I - 2 * 2I) = |m|^2 + 3
    b = rng.standard_normal((20000, 3)) * 2 + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5.0 + 3.0, rel=0.05)


def test_real_images_with_their_captions_score_near_perfect_fidelity(shapes_uri):
    data = ShapesData(shapes_uri, "hash", 64)
    ev = data.eval_set(64, 64)
    fid = caption_fidelity(load_shipped_judge(), ev.real_images_B3HW, ev)
    for name, value in fid.items():
        assert value >= 0.9, (name, value)
    shuffled = caption_fidelity(load_shipped_judge(), ev.real_images_B3HW.roll(1, 0), ev)
    assert shuffled["fidelity"] < 0.2, "mismatched images must not score"
    assert fid["conditioning"] >= 0.85 and abs(shuffled["conditioning"]) < 0.15  # ~1 with their captions, ~0 without


def test_conditioning_is_each_attributes_lift_over_chance_averaged():
    # shape 1/6, colour 1/8, size 1/3, position 1/9, background 1/4 are chance (shapes.ATTRIBUTE_VALUES).
    fidelity = {"fidelity_shape": 1 / 6, "fidelity_colour": 1.0, "fidelity_size": 2 / 3, "fidelity_position": 5 / 9,
                "fidelity_background": float("nan"), "fidelity": 0.0}
    # (0 + 1 + (2/3 - 1/3) / (2/3) + (5/9 - 1/9) / (8/9)) / 4 = (0 + 1 + 0.5 + 0.5) / 4; background is not named
    assert conditioning(fidelity) == pytest.approx(0.5)
    assert chance_fidelity()["fidelity_colour"] == pytest.approx(1 / 8)


class _ToyInception(torch.nn.Module):
    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        return torch.cat([pooled, pooled ** 2], dim=1), torch.stack([pooled[:, 0], -pooled[:, 0]], dim=1) * 10


def test_inception_metrics_from_a_torchscript_file(tmp_path):
    path = tmp_path / "inception.ts"
    torch.jit.script(_ToyInception()).save(str(path))
    net = load_scoring_net(str(path))
    real = torch.rand(40, 3, 8, 8) * 2 - 1
    real_pool = features(net, quantise(real))[0]
    same = inception_metrics(net, real, real_pool)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    # half the images certain of one class, half of the other: IS 2 in each of the 10 splits that mix them
    split = torch.cat([torch.full((20, 3, 8, 8), 0.9), torch.full((20, 3, 8, 8), -0.9)])[torch.arange(40).view(2, 20).T.flatten()]
    assert inception_metrics(net, split, real_pool)["inception_score"] == pytest.approx(2.0, rel=0.01)


def test_sample_grid_is_a_png_with_a_cell_per_image():
    imgs = torch.rand(10, 3, 16, 16) * 2 - 1
    attention = torch.softmax(torch.randn(10, 5, 4, 4), dim=1)
    png = sample_grid(imgs, [f"caption {i}" for i in range(10)], attention, columns=5, cell=64)
    grid = Image.open(io.BytesIO(png))
    assert grid.size[0] == 5 * 64 and grid.size[1] == 2 * (64 + 44 + 16)
