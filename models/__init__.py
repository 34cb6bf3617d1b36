"""StackGAN architecture: pure torch, no distribution, storage or Ray code (see docs/DESIGN.md)."""

from models.config import PROFILES, ModelProfile, Stage1Config, Stage2Config, get_profile
from models.stage1 import Stage1Discriminator, Stage1Generator
from models.stage2 import FrozenStage1, Stage2Discriminator, Stage2Generator, Stage2Output

__all__ = [
    "PROFILES",
    "FrozenStage1",
    "ModelProfile",
    "Stage1Config",
    "Stage1Discriminator",
    "Stage1Generator",
    "Stage2Config",
    "Stage2Discriminator",
    "Stage2Generator",
    "Stage2Output",
    "get_profile",
]
