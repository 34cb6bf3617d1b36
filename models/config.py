"""Typed architecture configs for the two StackGAN stages, and the named profiles.

Every width, noise size, text size and resolution is a field because the sweeps search them.
The ``paper`` profile reproduces the StackGAN paper's networks (docs/REFERENCE.md); ``small`` is a CPU
profile sized so the demo sweep and the tests train in minutes on two cores.
"""

from __future__ import annotations

import dataclasses
import math


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclasses.dataclass(frozen=True)
class Stage1Config:
    """Stage-I: caption embedding + noise -> low-resolution image."""

    image_size: int = 64  # output side in pixels; the generator starts from 4 x 4
    text_dim: int = 1024  # sentence-embedding size (1024 for the char-CNN-RNN embeddings)
    z_dim: int = 100  # noise size
    c_dim: int = 128  # conditioning-augmentation code size
    ngf: int = 128  # generator width: ngf * 8 channels at 4 x 4, halving every up-block
    ndf: int = 64  # discriminator width: ndf channels after the first stride-2 conv
    d_text_dim: int = 128  # text is compressed to this size inside D (TF original)

    def __post_init__(self) -> None:
        _check_positive(self, ("text_dim", "z_dim", "c_dim", "ngf", "ndf", "d_text_dim"))
        if not _is_power_of_two(self.image_size) or self.image_size < 16:
            raise ValueError(f"image_size must be a power of two >= 16, got {self.image_size}")
        if self.ngf * 8 < 2 ** self.num_up_blocks:
            raise ValueError(f"ngf={self.ngf} is too narrow for {self.num_up_blocks} up-blocks")

    @property
    def num_up_blocks(self) -> int:
        return int(math.log2(self.image_size // 4))


STAGE2_INITS = ("scratch", "residual")


@dataclasses.dataclass(frozen=True)
class Stage2Config:
    """Stage-II: Stage-I image + caption embedding (+ optional noise, words) -> high resolution."""

    stage1_size: int = 64  # side of the Stage-I image it refines
    image_size: int = 256  # output side in pixels
    text_dim: int = 1024
    c_dim: int = 128
    z_dim: int = 0  # noise injected into Stage-II; 0 reproduces the paper (no new noise)
    ngf: int = 128  # encoder widths ngf -> 2 ngf -> 4 ngf; up-blocks halve from 4 ngf
    ndf: int = 64
    num_residual: int = 4
    d_text_dim: int = 128
    attention: bool = False  # AttnGAN-style spatial word attention before the residual blocks
    word_dim: int = 0  # per-word feature size; required when attention is on
    # scratch (the paper): the output is drawn anew from the encoded Stage-I image, so Stage-II must
    # first learn to reproduce its input (16 epochs of the small profile) before it can refine it.
    # residual: the output is the upsampled Stage-I image plus a learned correction that starts at
    # zero, so Stage-II starts where its parent is and only learns the refinement.
    init: str = "scratch"

    def __post_init__(self) -> None:
        _check_positive(self, ("text_dim", "c_dim", "ngf", "ndf", "d_text_dim"))
        if self.z_dim < 0 or self.num_residual < 0:
            raise ValueError("z_dim and num_residual must be >= 0")
        if not _is_power_of_two(self.image_size) or not _is_power_of_two(self.stage1_size):
            raise ValueError("stage1_size and image_size must be powers of two")
        if self.image_size < 2 * self.stage1_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be at least twice stage1_size ({self.stage1_size})"
            )
        if self.stage1_size < 16:
            raise ValueError(f"stage1_size must be >= 16, got {self.stage1_size}")
        if self.init not in STAGE2_INITS:
            raise ValueError(f"init must be one of {', '.join(STAGE2_INITS)}, got {self.init!r}")
        if self.attention and self.word_dim <= 0:
            raise ValueError("attention needs word_dim > 0 (the caption encoder's word-feature size)")
        if self.ngf * 4 < 2 ** self.num_up_blocks:
            raise ValueError(f"ngf={self.ngf} is too narrow for {self.num_up_blocks} up-blocks")

    @property
    def encoded_size(self) -> int:
        """The Stage-I image is encoded down by 4 (64 px -> 16 x 16 in the paper)."""
        return self.stage1_size // 4

    @property
    def num_up_blocks(self) -> int:
        return int(math.log2(self.image_size // self.encoded_size))


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    name: str
    stage1: Stage1Config
    stage2: Stage2Config


def _check_positive(cfg: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be a positive integer, got {value!r}")


# CPU profile for the demo and the tests: 32 -> 64 px, narrow nets, 2 residual blocks.
# Why these sizes: Stage-I + Stage-II train to above-chance caption fidelity on the shapes
# data in a few CPU-minutes, while keeping every architectural feature of the paper.
_SMALL = ModelProfile(
    "small",
    Stage1Config(image_size=32, text_dim=256, z_dim=32, c_dim=32, ngf=16, ndf=16, d_text_dim=32),
    Stage2Config(
        stage1_size=32, image_size=64, text_dim=256, c_dim=32, ngf=16, ndf=16,
        num_residual=2, d_text_dim=32,
    ),
)

PROFILES: dict[str, ModelProfile] = {
    # The paper's networks: 64 px Stage-I, 256 px Stage-II, 1024-d char-CNN-RNN text.
    "paper": ModelProfile("paper", Stage1Config(), Stage2Config()),
    "small": _SMALL,
    # The demo's CPU profile: "small" with a Stage-I generator half as wide (64 channels at 4 x 4). On a CPU
    # a Stage-I step is mostly the generator's convolutions: at half the width it runs 1.5x the steps per
    # second, and caption fidelity per step stays within seed noise of "small" (docs/PERFORMANCE.md).
    "small-narrow": dataclasses.replace(_SMALL, name="small-narrow", stage1=dataclasses.replace(_SMALL.stage1, ngf=8)),
    # Smallest nets that still have every block; for unit tests only.
    "tiny": ModelProfile(
        "tiny",
        Stage1Config(image_size=16, text_dim=32, z_dim=8, c_dim=8, ngf=4, ndf=4, d_text_dim=8),
        Stage2Config(
            stage1_size=16, image_size=32, text_dim=32, c_dim=8, ngf=4, ndf=4, num_residual=1,
            d_text_dim=8,
        ),
    ),
}


def get_profile(
    name: str, stage1: dict | None = None, stage2: dict | None = None
) -> ModelProfile:
    """Returns profile ``name`` with optional per-stage field overrides, validated.

    Example: ``get_profile("small", stage1={"z_dim": 64}, stage2={"attention": True, "word_dim": 64})``.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown model profile {name!r}; choose from {sorted(PROFILES)}")
    base = PROFILES[name]
    s1 = dataclasses.replace(base.stage1, **(stage1 or {}))
    s2 = dataclasses.replace(base.stage2, **(stage2 or {}))
    if s2.stage1_size != s1.image_size:
        raise ValueError(f"stage2.stage1_size ({s2.stage1_size}) != stage1.image_size ({s1.image_size})")
    return ModelProfile(name, s1, s2)
