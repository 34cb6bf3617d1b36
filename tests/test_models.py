"""StackGAN networks: shapes, gradients, hand-checked losses, frozen Stage-I, attention, sizes."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import pathlib
import subprocess
import sys

import pytest
import torch

from models import (
    FrozenStage1,
    Stage1Discriminator,
    Stage1Generator,
    Stage2Discriminator,
    Stage2Generator,
    get_profile,
)
from models.attention import WordAttention
from models.layers import ConditioningAugmentation
from models.losses import (
    DiscriminatorLogits,
    discriminator_loss,
    generator_loss,
    hinge_loss,
    image_similarity,
    kl_loss,
    mismatched_indices,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The paper profile is exercised too: its Stage-II D alone has 71 M parameters, so batch stays at 2.
PROFILE_NAMES = ["tiny", "small", "paper"]
STAGE2_VARIANTS = {
    "plain": {},
    "noise": {"z_dim": 4},
    "attention": {"attention": True, "word_dim": 12},
}
BATCH = 2
WORDS = 5


def _inputs(profile, batch=BATCH):
    s1, s2 = profile.stage1, profile.stage2
    g = torch.Generator().manual_seed(0)
    return {
        "text1": torch.randn(batch, s1.text_dim, generator=g),
        "text2": torch.randn(batch, s2.text_dim, generator=g),
        "z1": torch.randn(batch, s1.z_dim, generator=g),
        "z2": torch.randn(batch, s2.z_dim, generator=g) if s2.z_dim else None,
        "words": torch.randn(batch, WORDS, max(s2.word_dim, 1), generator=g) if s2.attention else None,
        "mask": torch.tensor([[True] * WORDS, [True, True, True, False, False]][:batch])
        if s2.attention
        else None,
    }


def _assert_every_parameter_has_gradient(module: torch.nn.Module) -> None:
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("profile_name", PROFILE_NAMES)
def test_stage1_shapes_range_and_gradients(profile_name):
    profile = get_profile(profile_name)
    cfg = profile.stage1
    x = _inputs(profile)
    g, d = Stage1Generator(cfg), Stage1Discriminator(cfg)
    img, mu, logvar = g(x["text1"], x["z1"])
    assert img.shape == (BATCH, 3, cfg.image_size, cfg.image_size)
    assert img.min() >= -1 and img.max() <= 1
    assert mu.shape == logvar.shape == (BATCH, cfg.c_dim)
    out = d(img, x["text1"], x["text1"].flip(0))
    logits = out.matching_B + out.mismatched_B
    assert out.unconditional_B is None
    assert logits.shape == (BATCH,)
    assert torch.isfinite(logits).all()
    (logits.sum() + kl_loss(mu, logvar)).backward()
    _assert_every_parameter_has_gradient(g)
    _assert_every_parameter_has_gradient(d)


# Every Stage-II variant on the small profiles; the paper profile (71 M-parameter D) only plain, for CPU time.
STAGE2_CASES = [(p, v) for p in ("tiny", "small") for v in sorted(STAGE2_VARIANTS)] + [("paper", "plain")]


@pytest.mark.parametrize("profile_name,variant", STAGE2_CASES)
def test_stage2_shapes_range_and_gradients(profile_name, variant):
    profile = get_profile(profile_name, stage2=STAGE2_VARIANTS[variant])
    cfg = profile.stage2
    x = _inputs(profile)
    g, d = Stage2Generator(cfg), Stage2Discriminator(cfg)
    stage1_img = torch.rand(BATCH, 3, cfg.stage1_size, cfg.stage1_size) * 2 - 1
    out = g(stage1_img, x["text2"], x["z2"], x["words"], x["mask"])
    assert out.image_B3HW.shape == (BATCH, 3, cfg.image_size, cfg.image_size)
    assert out.image_B3HW.min() >= -1 and out.image_B3HW.max() <= 1
    if cfg.attention:
        side = cfg.encoded_size
        assert out.attention_BTHW.shape == (BATCH, WORDS, side, side)
    else:
        assert out.attention_BTHW is None
    feat = d.features(out.image_B3HW)
    cond, uncond = d.conditional(feat, x["text2"]), d.unconditional(feat)
    assert cond.shape == uncond.shape == (BATCH,)
    (cond.sum() + uncond.sum() + kl_loss(out.mu_BC, out.logvar_BC)).backward()
    _assert_every_parameter_has_gradient(g)
    _assert_every_parameter_has_gradient(d)


def test_conditioning_augmentation_has_no_relu_before_the_split():
    ca = ConditioningAugmentation(text_dim=2, c_dim=1)
    with torch.no_grad():
        ca.fc.weight.copy_(torch.tensor([[-1.0, 0.0], [0.0, -1.0]]))
        ca.fc.bias.zero_()
    c, mu, logvar = ca(torch.tensor([[2.0, 3.0]]), eps_BC=torch.tensor([[0.5]]))
    assert mu.item() == pytest.approx(-2.0)  # a ReLU would clamp these to 0
    assert logvar.item() == pytest.approx(-3.0)
    assert c.item() == pytest.approx(-2.0 + math.exp(-1.5) * 0.5)


def test_kl_matches_hand_computed_value():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # per element: -0.5 * (1 + logvar - mu^2 - exp(logvar))
    expected = (0.5 + -0.5 * (1 + math.log(4.0) - 0 - 4)) / 2
    assert kl_loss(mu, logvar).item() == pytest.approx(expected)
    assert kl_loss(torch.zeros(3, 4), torch.zeros(3, 4)).item() == pytest.approx(0.0)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_stage1_discriminator_loss_matches_hand_computed_value():
    real_B, wrong_B, fake_B = (torch.tensor([v], requires_grad=True) for v in (2.0, -1.0, 0.5))
    loss, parts = discriminator_loss(DiscriminatorLogits(real=real_B, wrong=wrong_B, fake=fake_B))
    real, wrong, fake = _softplus(-2.0), _softplus(-1.0), _softplus(0.5)  # BCE on logits
    assert loss.item() == pytest.approx(real + 0.5 * (wrong + fake))
    assert {k: v.item() for k, v in parts.items()} == pytest.approx({"d_real": real, "d_wrong": wrong, "d_fake": fake})
    assert not any(v.requires_grad for v in parts.values())  # logged values, never part of a graph


def test_stage2_discriminator_loss_uses_the_unconditional_head():
    logits = DiscriminatorLogits(
        real=torch.tensor([2.0]),
        wrong=torch.tensor([-1.0]),
        fake=torch.tensor([0.5]),
        real_uncond=torch.tensor([1.0]),
        fake_uncond=torch.tensor([-0.5]),
    )
    loss, _ = discriminator_loss(logits)
    expected = (_softplus(-2.0) + _softplus(-1.0)) / 2 + (_softplus(0.5) + _softplus(-1.0) + _softplus(-0.5)) / 3
    assert loss.item() == pytest.approx(expected)


def test_generator_loss_matches_hand_computed_value():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.zeros(1, 2)
    kl = 0.25  # -0.5 * mean(1 + 0 - [1, 0] - 1) = 0.25
    loss, parts = generator_loss(torch.tensor([0.3]), None, mu, logvar, kl_weight=2.0)
    assert loss.item() == pytest.approx(_softplus(-0.3) + 2.0 * kl)
    loss2, parts2 = generator_loss(torch.tensor([0.3]), torch.tensor([-0.7]), mu, logvar, kl_weight=2.0)
    assert loss2.item() == pytest.approx(_softplus(-0.3) + _softplus(0.7) + 2.0 * kl)
    assert parts2["kl"].item() == pytest.approx(kl)


def test_hinge_loss_terms():
    x = torch.tensor([0.5, -2.0])
    assert hinge_loss(x, True, False).item() == pytest.approx((0.5 + 3.0) / 2)
    assert hinge_loss(x, False, False).item() == pytest.approx((1.5 + 0.0) / 2)
    assert hinge_loss(x, True, True).item() == pytest.approx(0.75)


def test_mismatched_pairs_never_share_a_key():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        keys = torch.randint(0, 3, (16,), generator=gen)
        if keys.unique().numel() < 2:
            continue
        idx = mismatched_indices(keys, gen)
        assert (keys[idx] != keys).all()
        assert (idx != torch.arange(16)).all()
    with pytest.raises(ValueError, match="same"):
        mismatched_indices(torch.tensor([4, 4, 4]))


def test_hard_mismatches_take_the_most_similar_image_of_another_key():
    keys = torch.tensor([0, 0, 1, 2, 3])
    images = torch.zeros(5, 3, 16, 16)
    images[0] += 1.0  # 0 and 1 share a key; 2 looks like 0, 3 like 1, 4 like nothing
    images[1] -= 1.0
    images[2] += 0.9
    images[3] -= 0.8
    images[4, 0] += 3.0
    similar = image_similarity(images)
    hard = mismatched_indices(keys, torch.Generator().manual_seed(1), similar, hard_fraction=1.0)
    assert hard.tolist()[:4] == [2, 3, 0, 1] and (keys[hard] != keys).all()
    # hard_fraction 0 draws exactly what the paper's uniform rule draws, from the same generator.
    a = mismatched_indices(keys, torch.Generator().manual_seed(5))
    b = mismatched_indices(keys, torch.Generator().manual_seed(5), similar, hard_fraction=0.0)
    assert torch.equal(a, b)
    share = torch.stack([mismatched_indices(keys, torch.Generator().manual_seed(i), similar, 0.5)[0] == 2
                         for i in range(400)]).float().mean()
    assert 0.55 < share < 0.75  # half nearest (always 2), half uniform over 2, 3, 4 (a third of them 2)
    with pytest.raises(ValueError, match="similarity"):
        mismatched_indices(keys, None, None, hard_fraction=0.5)
    # In a larger batch the hard pick is uniform among the most similar quarter (here the 3 nearest).
    keys16 = torch.arange(16)
    sim = -(keys16[:, None] - keys16[None, :]).abs().float()
    picks = torch.stack([mismatched_indices(keys16, torch.Generator().manual_seed(i), sim, 1.0) for i in range(200)])
    distance = (picks - keys16).abs()
    assert distance.min() >= 1 and set(distance[:, 8].tolist()) == {1, 2}  # 3 nearest of 8: 7, 9 and 6 or 10


def test_stage2_step_leaves_frozen_stage1_untouched():
    profile = get_profile("tiny")
    s1, s2 = profile.stage1, profile.stage2
    stage1 = Stage1Generator(s1)
    before = {k: v.clone() for k, v in stage1.state_dict().items()}
    frozen = FrozenStage1(stage1)
    g, d = Stage2Generator(s2), Stage2Discriminator(s2)
    frozen.train()  # must stay in eval mode regardless
    g.train(), d.train()
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-2)
    text = torch.randn(4, s2.text_dim)
    real = torch.rand(4, 3, s2.image_size, s2.image_size) * 2 - 1
    for _ in range(2):
        low = frozen(text, torch.randn(4, s1.z_dim))
        out = g(low, text)
        feat_real, feat_fake = d.features(real), d.features(out.image_B3HW.detach())
        d_loss, _ = discriminator_loss(
            DiscriminatorLogits(
                real=d.conditional(feat_real, text),
                wrong=d.conditional(feat_real, text.roll(1, 0)),
                fake=d.conditional(feat_fake, text),
                real_uncond=d.unconditional(feat_real),
                fake_uncond=d.unconditional(feat_fake),
            )
        )
        opt_d.zero_grad(), d_loss.backward(), opt_d.step()
        feat = d.features(out.image_B3HW)
        g_loss, _ = generator_loss(d.conditional(feat, text), d.unconditional(feat), out.mu_BC, out.logvar_BC, 2.0)
        opt_g.zero_grad(), g_loss.backward(), opt_g.step()
    assert not frozen.training and not stage1.training
    for key, value in stage1.state_dict().items():
        assert torch.equal(value, before[key]), f"frozen Stage-I changed: {key}"
    assert all(p.grad is None for p in stage1.parameters())


def test_attention_sums_to_one_over_unmasked_words():
    torch.manual_seed(0)
    attn = WordAttention(word_dim=6, channels=8)
    h = torch.randn(2, 8, 3, 3)
    words = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, True, True], [True, False, True, False]])
    context, maps = attn(h, words, mask)
    assert context.shape == (2, 8, 3, 3)
    assert maps.shape == (2, 4, 3, 3)
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(2, 3, 3))
    assert (maps[1, ~mask[1]] == 0).all()
    with pytest.raises(ValueError, match="unmasked"):
        attn(h, words, torch.zeros(2, 4, dtype=torch.bool))


def test_init_follows_the_paper():
    torch.manual_seed(0)
    g = Stage2Generator(get_profile("paper").stage2)
    conv = g.residual[0].body[0].weight
    assert conv.std().item() == pytest.approx(0.02, rel=0.05)
    bn = g.residual[0].body[1]
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bn.bias.abs().sum().item() == 0


def test_bad_profile_overrides_are_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="z_dim"):
        get_profile("small", stage1={"z_dim": 0})
    with pytest.raises(ValueError, match="word_dim"):
        get_profile("small", stage2={"attention": True})
    with pytest.raises(ValueError, match="unknown model profile"):
        get_profile("huge")


# docs/REFERENCE.md: parameters and forward GFLOP per image of the reference port (paper profile).
REFERENCE_SIZES = {
    "stage1_generator": (10.30e6, 2.44),
    "stage1_discriminator": (5.72e6 + 0.13e6, 0.30),  # + the TF-style text projection inside D
    "stage2_generator": (26.29e6, 23.1),
    "stage2_discriminator": (71.27e6, 6.32),
}


def test_summary_command_matches_reference_sizes():
    out = subprocess.run(
        [sys.executable, "-m", "models", "summary", "--profile", "paper"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    nets = json.loads(out.stdout)["networks"]
    assert set(nets) == set(REFERENCE_SIZES)
    for name, (params, gflop) in REFERENCE_SIZES.items():
        assert nets[name]["parameters"] == pytest.approx(params, rel=0.02), name
        assert nets[name]["gflop_per_image"] == pytest.approx(gflop, rel=0.02), name


def test_models_import_only_torch_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"torch", "models", "__future__"}
    for path in (ROOT / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_residual_stage2_starts_as_the_upsampled_stage1_image_and_learns_a_correction():
    import torch.nn.functional as F

    from models import Stage2Config, Stage2Generator

    cfg = Stage2Config(stage1_size=16, image_size=32, text_dim=32, c_dim=8, ngf=4, ndf=4, num_residual=1,
                       d_text_dim=8, init="residual")
    g = Stage2Generator(cfg)
    low_B3hw = torch.rand(3, 3, 16, 16) * 1.6 - 0.8
    out = g(low_B3hw, torch.randn(3, 32))
    expected = F.interpolate(low_B3hw, size=(32, 32), mode="bilinear", align_corners=False)
    assert out.image_B3HW.shape == (3, 3, 32, 32)
    assert torch.allclose(out.image_B3HW, expected, atol=1e-5), "at initialisation Stage-II returns its input"
    out.image_B3HW.sum().backward()
    assert g.to_rgb.weight.grad.abs().sum() > 0, "the zero-initialised correction still gets a gradient"
    scratch = Stage2Generator(dataclasses.replace(cfg, init="scratch"))(low_B3hw, torch.randn(3, 32)).image_B3HW
    assert not torch.allclose(scratch, expected, atol=1e-2)
    with pytest.raises(ValueError, match="init must be one of scratch, residual"):
        dataclasses.replace(cfg, init="copy")


def test_the_divergence_guard_reads_its_losses_only_every_check_every_steps():
    from harness.loop import Diverged, DivergenceGuard

    guard = DivergenceGuard(collapse_loss=1e-3, collapse_steps=2, check_every=3)
    ok, low = torch.tensor(0.7), torch.tensor(1e-4)
    guard.observe(low, ok)
    guard.observe(low, ok)  # collapsed for 2 steps: tripped, but not read back yet
    assert not guard.checked_now()
    with pytest.raises(Diverged, match="collapsed .* for 2 steps"):
        guard.observe(ok, ok)  # the 3rd step reads: the run of 2 is remembered after it ended
    nan = DivergenceGuard(collapse_loss=1e-3, collapse_steps=5, check_every=50)
    nan.observe(torch.tensor(float("nan")), torch.tensor(2.0))
    nan.observe(ok, ok)
    with pytest.raises(Diverged, match=r"non-finite loss \(d=nan, g=2.0\)"):
        nan.check()  # the epoch's end reads whatever the interval left
