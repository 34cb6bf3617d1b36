"""One stage of StackGAN training in plain torch: build, D step, G step, sampling, state.

No Ray here: worker.py drives this loop inside Ray Train, benchmarks drive it in a plain process.
Each ``train_step`` is the paper's order: a discriminator step on (real, its caption), (real,
mismatched caption) and (fake, its caption), then a generator step with the KL term.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

from harness.config import SweepConfig, TrainSettings
from harness.data.dataset import Batch
from harness.errors import ConfigError
from harness.generator_ema import GeneratorEMA
from harness.hyperparams import CLASSES, Hyperparams
from models import FrozenStage1, Stage1Discriminator, Stage1Generator, Stage2Discriminator, Stage2Generator
from models.config import ModelProfile, get_profile
from models.losses import (
    DiscriminatorLogits,
    discriminator_loss,
    generator_loss,
    get_adversarial_loss,
    image_similarity,
    mismatched_indices,
)


class Diverged(RuntimeError):
    """The run left the regime where training makes progress; the message says how."""


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """What the loop trains: no URIs, no Ray, nothing about where the run is stored."""

    stage: int
    profile: str  # models/config.py PROFILES
    loss: str  # bce | hinge
    train: TrainSettings
    hparams: Hyperparams  # Stage1Hyperparams or Stage2Hyperparams, matching ``stage``

    def __post_init__(self) -> None:
        if not isinstance(self.hparams, CLASSES[self.stage]):
            raise ConfigError(f"hparams: Stage-{'I' * self.stage} needs {CLASSES[self.stage].__name__}, "
                              f"got {type(self.hparams).__name__}")

    @classmethod
    def from_sweep(cls, sweep: SweepConfig, hparams: Hyperparams, train: TrainSettings | None = None) -> LoopSpec:
        stage = next(s for s, c in CLASSES.items() if isinstance(hparams, c))
        return cls(stage=stage, profile=sweep.model.profile, loss=sweep.model.loss, train=train or sweep.train,
                   hparams=hparams)


def build_profile(spec: LoopSpec, text_dim: int, word_dim: int, stage1_cfg: dict | None = None) -> ModelProfile:
    """The model profile with this run's searched values and the dataset's text sizes filled in.

    Stage-II takes Stage-I's architecture from its checkpoint (``stage1_cfg``), whatever this run searches.
    """
    hp = spec.hparams
    if spec.stage == 1:
        return get_profile(spec.profile, stage1=dict(text_dim=text_dim, z_dim=hp.z_dim, c_dim=hp.c_dim))
    stage2 = dict(text_dim=text_dim, c_dim=hp.c_dim, z_dim=hp.z_dim_stage2, attention=hp.attention,
                  word_dim=word_dim if hp.uses_word_features else 0, init=hp.stage2_init)
    return get_profile(spec.profile, stage1=dict(stage1_cfg), stage2=stage2)


class DivergenceGuard:
    """Ends a run whose losses went non-finite or whose discriminator collapsed for ``collapse_steps`` steps.

    Every step's losses are folded into device tensors; they are read back only every ``check_every``
    steps, so the steady-state step never waits for the GPU (a read per step would synchronise it).
    A collapse is still counted in consecutive steps; a check may only come up to ``check_every - 1``
    steps after the step that tripped it.
    """

    def __init__(self, collapse_loss: float, collapse_steps: int, check_every: int) -> None:
        self.collapse_loss, self.collapse_steps, self.check_every = collapse_loss, collapse_steps, check_every
        self.steps = 0
        self._state = None  # [collapsed-run length, longest run, non-finite seen, first bad d, first bad g]

    def observe(self, d_loss: torch.Tensor, g_loss: torch.Tensor) -> None:
        """Folds one step's losses in; checks (one device read) every ``check_every`` steps."""
        d, g = d_loss.detach().float(), g_loss.detach().float()
        if self._state is None:
            self._state = torch.zeros(5, device=d.device)
        run, longest, nonfinite, bad_d, bad_g = self._state.unbind()
        bad = ~(torch.isfinite(d) & torch.isfinite(g))
        first_bad = bad & (nonfinite == 0)
        run = (run + 1) * (d < self.collapse_loss)
        self._state = torch.stack([run, torch.maximum(longest, run), torch.maximum(nonfinite, bad.float()),
                                   torch.where(first_bad, d, bad_d), torch.where(first_bad, g, bad_g)])
        self.steps += 1
        if self.checked_now():
            self.check()

    def checked_now(self) -> bool:
        """Whether the last observed step was one the guard read back (the same step on every rank)."""
        return self.steps % self.check_every == 0

    def check(self) -> None:
        if self._state is None:
            return
        _, longest, nonfinite, bad_d, bad_g = self._state.tolist()
        if nonfinite:
            raise Diverged(f"non-finite loss (d={bad_d}, g={bad_g})")
        if longest >= self.collapse_steps:
            raise Diverged(f"discriminator collapsed (loss < {self.collapse_loss}) for {int(longest)} steps")


class StageLoop:
    def __init__(
        self,
        spec: LoopSpec,
        text_dim: int,
        word_dim: int,
        device: torch.device,
        stage1_generator: Stage1Generator | None = None,
    ) -> None:
        self.spec, self.stage, self.device = spec, spec.stage, device
        stage1_cfg = dataclasses.asdict(stage1_generator.cfg) if stage1_generator is not None else None
        self.profile = build_profile(spec, text_dim, word_dim, stage1_cfg)
        torch.manual_seed(spec.train.seed)
        if self.stage == 1:
            self.g: nn.Module = Stage1Generator(self.profile.stage1)
            self.d: nn.Module = Stage1Discriminator(self.profile.stage1)
            self.frozen = None
            self.image_size = self.profile.stage1.image_size
        else:
            if stage1_generator is None:
                raise ValueError("Stage-II needs the trained Stage-I generator")
            self.frozen = FrozenStage1(stage1_generator).to(device)
            self.g = Stage2Generator(self.profile.stage2)
            self.d = Stage2Discriminator(self.profile.stage2)
            self.image_size = self.profile.stage2.image_size
        cuda = device.type == "cuda"
        # channels_last on CPU too: oneDNN convolutions skip layout copies (paper Stage-I step: 5.09 s
        # -> 4.06 s on 2 cores, docs/PERFORMANCE.md); on GPU it feeds tensor cores.
        self.g.to(device, memory_format=torch.channels_last)
        self.d.to(device, memory_format=torch.channels_last)
        precision = spec.train.precision
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" or (precision == "auto" and cuda) else None
        betas = (0.5, 0.999)  # DCGAN/StackGAN
        self.opt_g = torch.optim.Adam([p for p in self.g.parameters() if p.requires_grad], lr=spec.hparams.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=spec.hparams.lr_d, betas=betas)
        decay = dict(step_size=spec.train.lr_decay_every, gamma=spec.train.lr_decay_factor)
        self.sched_g = torch.optim.lr_scheduler.StepLR(self.opt_g, **decay)
        self.sched_d = torch.optim.lr_scheduler.StepLR(self.opt_d, **decay)
        self.adversarial = get_adversarial_loss(spec.loss)
        self.kl_weight = spec.hparams.kl_weight
        self.rng = torch.Generator(device="cpu").manual_seed(spec.train.seed + 1)
        divergence = spec.train.divergence
        self.guard = DivergenceGuard(divergence.collapse_loss, divergence.collapse_steps, divergence.check_every)
        self.g_train, self.d_train = self.g, self.d  # replaced by DDP wrappers in worker.py
        # train.g_ema: the average of the bare generator's weights; it is what sample() draws from.
        self.ema = GeneratorEMA(self.g, spec.train.g_ema, spec.train.g_ema_bn) if spec.train.g_ema > 0 else None

    @property
    def g_eval(self) -> nn.Module:
        """The generator that is evaluated, sampled and saved for Stage-II: the moving average when on."""
        return self.ema.module if self.ema is not None else self.g

    def wrap(self, wrap_fn) -> None:
        """Wraps G and D for data parallelism (e.g. DDP); the bare modules stay in self.g / self.d."""
        self.g_train, self.d_train = wrap_fn(self.g), wrap_fn(self.d)

    def compile(self, mode: str) -> None:
        """``train.compile``: torch.compile the (wrapped) G and D; reduce-overhead replays CUDA graphs."""
        if mode != "none":
            self.g_train = torch.compile(self.g_train, mode=None if mode == "default" else mode)
            self.d_train = torch.compile(self.d_train, mode=None if mode == "default" else mode)

    def _noise(self, batch_size: int, dim: int) -> torch.Tensor | None:
        if dim == 0:
            return None
        return torch.randn(batch_size, dim, generator=self.rng).to(self.device, non_blocking=True)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def generate(self, text, words=None, mask=None, train: bool = True, using: nn.Module | None = None):
        """Returns (images, mu, logvar, attention-or-None) from the (wrapped, when training) G, or from ``using``."""
        g = using if using is not None else (self.g_train if train else self.g_eval)
        b = text.shape[0]
        if self.stage == 1:
            img, mu, logvar = g(text, self._noise(b, self.profile.stage1.z_dim))
            return img, mu, logvar, None
        low = self.frozen(text, self._noise(b, self.profile.stage1.z_dim))
        out = g(low, text, self._noise(b, self.profile.stage2.z_dim), words, mask)
        return out.image_B3HW, out.mu_BC, out.logvar_BC, out.attention_BTHW

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One D step and one G step. Returns the losses as detached 0-d tensors on the device: nothing in
        a step reads a value back from the GPU (the guard reads its own every ``check_every`` steps)."""
        # Mismatched captions are drawn from the batch as the loader made it, on the CPU, before the copy to
        # the device: the draw needs no device value, so it never waits for the GPU.
        hard = self.spec.train.hard_negatives
        similar = image_similarity(batch.images_B3HW) if hard > 0 else None
        wrong = mismatched_indices(batch.keys_B, self.rng, similar, hard)
        batch = batch.to(self.device)
        real, text = batch.images_B3HW.contiguous(memory_format=torch.channels_last), batch.text_BD
        wrong_text = text[wrong.to(self.device, non_blocking=True)]
        self.g_train.train(), self.d_train.train()
        with self._autocast():
            fake, mu, logvar, _ = self.generate(text, batch.words_BTD, batch.mask_BT)
            # D step: real with its caption -> real; real with a mismatched caption and fake -> fake.
            real_out = self.d_train(real, text, wrong_text)
            fake_out = self.d_train(fake.detach(), text)
            d_loss, parts = discriminator_loss(
                DiscriminatorLogits(
                    real=real_out.matching_B.float(), wrong=real_out.mismatched_B.float(),
                    fake=fake_out.matching_B.float(),
                    real_uncond=None if real_out.unconditional_B is None else real_out.unconditional_B.float(),
                    fake_uncond=None if fake_out.unconditional_B is None else fake_out.unconditional_B.float(),
                ),
                self.adversarial,
            )
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        # G step. D's gradients here are discarded (zeroed before the next D step), so DDP need not
        # all-reduce them: no_sync skips that communication.
        no_sync = getattr(self.d_train, "no_sync", contextlib.nullcontext)
        with self._autocast(), no_sync():
            out = self.d_train(fake, text)
            g_loss, g_parts = generator_loss(
                out.matching_B.float(), None if out.unconditional_B is None else out.unconditional_B.float(),
                mu.float(), logvar.float(), self.kl_weight, self.adversarial,
            )
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.g)
        self.guard.observe(d_loss, g_loss)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **parts, **g_parts}

    def end_epoch(self) -> None:
        self.sched_g.step()
        self.sched_d.step()

    @torch.no_grad()
    def sample(self, text, words=None, mask=None, seed: int = 1234, batch: int = 64, using: nn.Module | None = None):
        """Images for a fixed caption set with fixed noise: the same at every evaluation, from ``g_eval``
        (or ``using``, another generator of this stage, e.g. a benchmark's second moving average).

        Neither RNG stream of training moves, so how often a run evaluates does not change its weights.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._sample(text, words, mask, seed, batch, using if using is not None else self.g_eval)

    def _sample(self, text, words, mask, seed: int, batch: int, g: nn.Module):
        saved = self.rng.get_state()
        self.rng.manual_seed(seed)
        g.eval()
        imgs, attns = [], []
        for i in range(0, text.shape[0], batch):
            sl = slice(i, i + batch)
            with self._autocast():
                img, _, _, attn = self.generate(
                    text[sl].to(self.device),
                    None if words is None else words[sl].to(self.device),
                    None if mask is None else mask[sl].to(self.device),
                    train=False, using=g,
                )
            imgs.append(img.float().cpu())
            if attn is not None:
                attns.append(attn.float().cpu())
        self.rng.set_state(saved)
        return torch.cat(imgs), (torch.cat(attns) if attns else None)

    def state_dict(self) -> dict:
        return {
            "generator": self.g.state_dict(),
            "discriminator": self.d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            **({"generator_ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["generator"])
        self.d.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.ema is not None:
            if "generator_ema" not in state:
                raise ConfigError("train.g_ema: the checkpoint this run resumes from has no generator average "
                                  "(it was trained with g_ema 0); resume with the same g_ema or start a new run")
            self.ema.load_state_dict(state["generator_ema"])
