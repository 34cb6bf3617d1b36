"""The standard FID Inception and its metrics: equality with torch-fidelity 0.4.0, hand-computed FID, KID
and IS, the refusals of bad weights files (a malicious pickle must not run), and ``python -m harness.metrics``."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import ConfigError
from harness.metrics.distances import frechet_distance, inception_score, kid_subset_size
from harness.metrics.image_sets import quantise, read_image_set
from harness.metrics.inception import load_scoring_net, resize_like_tf1
from tests import torch_fidelity_reference
from tests.conftest import random_standard_inception

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_features_and_logits_equal_torch_fidelitys_on_the_same_weights_and_uint8_images(standard_inception_weights):
    extractor = torch_fidelity_reference.extractor_class()
    theirs = extractor("inception-v3-compat", ["2048", "logits_unbiased"],
                       feature_extractor_weights_path=str(standard_inception_weights))
    theirs_biased = extractor("inception-v3-compat", ["logits"], feature_extractor_weights_path=str(standard_inception_weights))
    ours = load_scoring_net(str(standard_inception_weights))
    images = torch.randint(0, 256, (3, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pool, unbiased = theirs(images)
        (logits,) = theirs_biased(images)
        out = ours.module(images)
    for name, a, b in (("pool", pool, out.pool_BF), ("logits_unbiased", unbiased, out.logits_unbiased_BK),
                       ("logits", logits, out.logits_BK)):
        assert a.shape == b.shape, name
        diff = (a - b).abs().max().item()
        print(f"{name}: max abs difference {diff:.3g} (values up to {a.abs().max().item():.3g})")
        assert diff <= 1e-4, name
    assert pool.std(0).mean() > 0  # the random weights give features that differ between images


def test_the_pytorch_fid_layout_without_batchnorm_counters_loads_to_the_same_network(tmp_path, standard_inception_weights):
    state = torch.load(standard_inception_weights, weights_only=True)
    bare = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(bare) < len(state)
    torch.save(bare, tmp_path / "pt_inception.pth")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    a = load_scoring_net(str(standard_inception_weights))(images)
    b = load_scoring_net(str(tmp_path / "pt_inception.pth"))(images)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_tf1_bilinear_resize_samples_at_i_times_in_over_out_without_half_pixel_offset():
    x = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    # 2 -> 4: source positions 0, 0.5, 1, 1.5; the last clamps to the edge
    row = [0.0, 2.0, 4.0, 4.0]
    expected = torch.tensor([[row, [4.0, 6.0, 8.0, 8.0], [8.0, 10.0, 12.0, 12.0], [8.0, 10.0, 12.0, 12.0]]])
    assert torch.equal(resize_like_tf1(x, 4)[0], expected)


def test_generated_images_are_quantised_as_a_saved_png_would_be():
    fake = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.7]).view(1, 1, 2, 3).expand(1, 3, 2, 3)
    assert quantise(fake)[0, 0].flatten().tolist() == [0, 0, 128, 191, 255, 255]  # round(127.5 (x + 1)), clamped


def test_fid_of_two_tiny_sets_by_hand():
    # a: mean (1, 0), cov diag(2, 0.5); b: mean (2, 0), cov diag(2, 0.5) (np.cov, ddof 1)
    a = np.array([[0.0, 0.5], [2.0, -0.5]])
    b = np.array([[1.0, 0.5], [3.0, -0.5]])
    # |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) = 1 + (4 + 1) - 2 (2 + 0.5) = 1
    assert frechet_distance(a, b) == pytest.approx(1.0)
    c = np.array([[0.0, 1.0], [4.0, -1.0]])  # mean (2, 0), cov diag(8, 2): 1 + (10 + 2.5) - 2 (4 + 1) = 3.5
    assert frechet_distance(a, c) == pytest.approx(3.5)


def test_inception_score_by_hand():
    sure = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])  # two images, each certain of a different class
    assert inception_score(sure, splits=1)[0] == pytest.approx(2.0, rel=1e-6)
    assert inception_score(torch.zeros(6, 5), splits=3) == pytest.approx((1.0, 0.0))
    # p = (0.5, 0.5) and (1, 0): marginal (0.75, 0.25); KL = [0.5 ln(2/3) + 0.5 ln 2, ln(4/3)] -> mean, exp
    log_half = torch.log(torch.tensor([[0.5, 0.5], [1.0, 1e-30]]))
    kl = (0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25) + np.log(1 / 0.75)) / 2
    assert inception_score(log_half, splits=1)[0] == pytest.approx(np.exp(kl), rel=1e-6)


def test_kid_subsets_are_torch_fidelitys_1000_or_half_the_smaller_set():
    assert kid_subset_size(29_330, 2_933) == 1000
    assert kid_subset_size(600, 2_933) == 300
    assert kid_subset_size(3, 8) == 2


def _refusal(path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_scoring_net(str(path), **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(kwargs.get("field_path", "data.inception_weights") + ": ")
    return message


class _Payload:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_weights_files_that_are_not_the_standard_state_dict_are_refused_in_one_line(tmp_path, standard_inception_weights):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "linear.pth")
    assert "not the standard FID Inception's layout" in _refusal(tmp_path / "linear.pth")
    state = torch.load(standard_inception_weights, weights_only=True)
    state["Mixed_6b.branch7x7_2.conv.weight"] = torch.zeros(128, 128, 7, 1)
    torch.save(state, tmp_path / "shapes.pth")
    assert "Mixed_6b.branch7x7_2.conv.weight is (128, 128, 7, 1), expected (128, 128, 1, 7)" in _refusal(tmp_path / "shapes.pth")
    del state["Mixed_6b.branch7x7_2.conv.weight"]
    torch.save(state, tmp_path / "missing.pth")
    assert "missing Mixed_6b.branch7x7_2.conv.weight" in _refusal(tmp_path / "missing.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    assert "not a state dict of tensors" in _refusal(tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("hello")
    assert "weights_only" in _refusal(tmp_path / "text.pth", field_path="data.is_classifier", num_classes=None)
    imagenet = random_standard_inception().state_dict()
    imagenet["fc.weight"], imagenet["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(imagenet, tmp_path / "imagenet1000.pth")
    assert "1000 classes, the standard FID Inception 1008" in _refusal(tmp_path / "imagenet1000.pth")
    assert load_scoring_net(str(tmp_path / "imagenet1000.pth"), num_classes=None).is_standard  # an IS classifier may


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_weights_file_holding_a_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"fc.weight": _Payload(marker)}))
    else:
        torch.save({"fc.weight": _Payload(marker)}, path)
    assert "weights_only" in _refusal(path)
    assert not marker.exists(), "loading the weights file ran code pickled in it"
    if writer == "pickle":  # the payload is real: an unsafe load runs it
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_torchscript_network_still_works_and_says_it_is_not_the_standard_one(tmp_path):
    class Toy(torch.nn.Module):
        def forward(self, x):
            pooled = x.mean(dim=(2, 3))
            return pooled, pooled[:, :2] * 10

    torch.jit.script(Toy()).save(str(tmp_path / "toy.ts"))
    net = load_scoring_net(str(tmp_path / "toy.ts"))
    assert net.kind == "torchscript" and "not the standard FID Inception" in net.describe()
    pool, _ = net(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8))
    assert pool.tolist() == [[1.0, 1.0, 1.0]]  # a TorchScript net keeps its float input in [-1, 1]


def _folder(path: pathlib.Path, n: int, seed: int, size: int = 32) -> pathlib.Path:
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


def _metrics_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.metrics", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_metrics_command_scores_two_folders_with_torch_fidelitys_key_names(tmp_path, standard_inception_weights):
    fake, real = _folder(tmp_path / "fake", 6, 0), _folder(tmp_path / "real", 6, 1)
    np.savez(tmp_path / "real.npz", read_image_set(str(real)).permute(0, 2, 3, 1).numpy())
    out = _metrics_cli("--input1", str(fake), "--input2", str(tmp_path / "real.npz"),
                       "--inception-weights", str(standard_inception_weights), "--fid", "--kid", "--isc")
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout)
    assert set(scores) == {"frechet_inception_distance", "kernel_inception_distance_mean",
                           "kernel_inception_distance_std", "inception_score_mean", "inception_score_std"}
    assert scores["frechet_inception_distance"] > 0 and scores["inception_score_mean"] >= 1.0
    assert "standard FID Inception" in out.stderr
    same = _metrics_cli("--input1", str(real), "--input2", str(tmp_path / "real.npz"),
                        "--inception-weights", str(standard_inception_weights), "--fid")
    assert json.loads(same.stdout) == {"frechet_inception_distance": pytest.approx(0.0, abs=1e-3)}  # a set against itself


def test_the_metrics_command_refuses_bad_input_in_one_line_with_exit_2(tmp_path, standard_inception_weights):
    (tmp_path / "empty").mkdir()
    real = _folder(tmp_path / "real", 3, 1)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    (tmp_path / "weights.pth").write_text("not weights")
    cases = [(("--input1", str(tmp_path / "empty"), "--input2", str(real)), "no PNG or JPEG images"),
             (("--input1", str(tmp_path / "broken"), "--input2", str(real)), "a.png: unreadable image"),
             (("--input1", str(real), "--input2", str(real), "--inception-weights", str(tmp_path / "weights.pth")),
              "--inception-weights: ")]
    for args, expected in cases:
        if "--inception-weights" not in args:
            args = (*args, "--inception-weights", str(standard_inception_weights))
        out = _metrics_cli(*args)
        assert out.returncode == 2 and expected in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
