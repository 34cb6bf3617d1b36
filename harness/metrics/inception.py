"""The networks FID, KID and IS are computed in: the standard FID Inception, or a user's TorchScript one.

The standard FID Inception is the InceptionV3 graph of TensorFlow's 2015-12-05 release, the one published
FIDs were computed with, in the layout pytorch-fid and torch-fidelity use. Where it differs from
torchvision's InceptionV3 (and why scores from torchvision's are not comparable):

- 1008 classes, not 1000;
- the average-pool branches of the 35x35, 17x17 and first 8x8 blocks leave padding out of the average;
- the last 8x8 block pools its pool branch with a max, not an average;
- inputs are resized to 299 x 299 with TensorFlow 1's bilinear resize (no half-pixel offset, no
  antialiasing) from uint8 values, then scaled by (x - 128) / 128.

Its weights come from either standard file, which users already have: pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
(the same state-dict layout). They are read with ``torch.load(weights_only=True)``, which loads tensors
and never runs code pickled in a file; anything but that state dict is refused in one line naming the field.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import torch
import torch.nn.functional as F
from torch import nn

from harness import storage
from harness.errors import ConfigError

INPUT_SIZE = 299
POOL_DIM = 2048
STANDARD_CLASSES = 1008  # the 2015 graph's 1,008 outputs (ImageNet's 1,000 and 8 unused)


class _ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (TensorFlow's eps 1e-3), ReLU: every layer of the graph."""

    def __init__(self, in_ch: int, out_ch: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 'SAME' average pool: padded positions are left out of the average."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _Block35(nn.Module):
    """Mixed_5b/5c/5d: 1x1, 5x5, double 3x3 and pool branches at 35 x 35."""

    def __init__(self, in_ch: int, pool_ch: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(in_ch, 64, 1)
        self.branch5x5_1 = _ConvBN(in_ch, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(in_ch, pool_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_same(x)),
        ], 1)


class _Reduce35(nn.Module):
    """Mixed_6a: 35 x 35 -> 17 x 17."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _Block17(nn.Module):
    """Mixed_6b-6e: 7x7 convolutions factorised into 1x7 and 7x1, at 17 x 17."""

    def __init__(self, in_ch: int, mid: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(in_ch, 192, 1)
        self.branch7x7_1 = _ConvBN(in_ch, mid, 1)
        self.branch7x7_2 = _ConvBN(mid, mid, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(mid, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(in_ch, mid, 1)
        self.branch7x7dbl_2 = _ConvBN(mid, mid, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(mid, mid, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(mid, mid, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(mid, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            self.branch7x7dbl_5(self.branch7x7dbl_4(dbl)),
            self.branch_pool(_avg_pool_same(x)),
        ], 1)


class _Reduce17(nn.Module):
    """Mixed_7a: 17 x 17 -> 8 x 8."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(in_ch, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(in_ch, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(seven),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _Block8(nn.Module):
    """Mixed_7b/7c at 8 x 8; ``max_pool``: the 2015 graph's Mixed_7c pools its pool branch with a max."""

    def __init__(self, in_ch: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(in_ch, 320, 1)
        self.branch3x3_1 = _ConvBN(in_ch, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(in_ch, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(three), self.branch3x3_2b(three),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], 1)


def resize_like_tf1(images_B3HW: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1's ``resize_bilinear`` (align_corners=False): output pixel i samples the input at
    i * in/out, with no half-pixel offset and no antialiasing (torch's bilinear samples at (i + 0.5) * in/out
    - 0.5, so its FIDs differ). Interpolates along the width, then along the height."""

    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=images_B3HW.dtype, device=images_B3HW.device) * torch.tensor(
            n_in / size, dtype=torch.float32)
        lo = src.long()  # floor: the positions are never negative
        return lo, (lo + 1).clamp_max(n_in - 1), src - lo.to(src.dtype)

    x_lo, x_hi, dx = taps(images_B3HW.shape[3])
    y_lo, y_hi, dy = taps(images_B3HW.shape[2])
    left, right = images_B3HW[:, :, :, x_lo], images_B3HW[:, :, :, x_hi]
    rows = left + (right - left) * dx.view(1, 1, 1, size)
    top, bottom = rows[:, :, y_lo, :], rows[:, :, y_hi, :]
    return top + (bottom - top) * dy.view(1, 1, size, 1)


@dataclasses.dataclass(frozen=True)
class InceptionOutputs:
    pool_BF: torch.Tensor  # the 2,048-d pool features FID and KID use
    logits_BK: torch.Tensor  # the classifier's logits with its bias
    logits_unbiased_BK: torch.Tensor  # without the bias: what torch-fidelity's IS uses (its default)


class FIDInceptionV3(nn.Module):
    """The standard FID Inception (module docstring). ``forward`` takes uint8 images of any size."""

    def __init__(self, num_classes: int = STANDARD_CLASSES) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _Block35(192, 32)
        self.Mixed_5c = _Block35(256, 64)
        self.Mixed_5d = _Block35(288, 64)
        self.Mixed_6a = _Reduce35(288)
        self.Mixed_6b = _Block17(768, 128)
        self.Mixed_6c = _Block17(768, 160)
        self.Mixed_6d = _Block17(768, 160)
        self.Mixed_6e = _Block17(768, 192)
        self.Mixed_7a = _Reduce17(768)
        self.Mixed_7b = _Block8(1280, max_pool=False)
        self.Mixed_7c = _Block8(2048, max_pool=True)
        self.fc = nn.Linear(POOL_DIM, num_classes)

    def forward(self, images_B3HW_uint8: torch.Tensor) -> InceptionOutputs:
        if images_B3HW_uint8.dtype != torch.uint8 or images_B3HW_uint8.dim() != 4 or images_B3HW_uint8.shape[1] != 3:
            raise ValueError(f"expected uint8 images B x 3 x H x W, got {images_B3HW_uint8.dtype} "
                             f"{tuple(images_B3HW_uint8.shape)}")
        x = resize_like_tf1(images_B3HW_uint8.float(), INPUT_SIZE)
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)  # 73 x 73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)  # 35 x 35
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # 8 x 8
        pool_BF = x.mean((2, 3))
        unbiased = pool_BF @ self.fc.weight.T
        return InceptionOutputs(pool_BF, unbiased + self.fc.bias, unbiased)


@dataclasses.dataclass
class ScoringNet:
    """A network that gives pool features and logits for uint8 images, and says what it is."""

    module: nn.Module
    kind: str  # "standard" | "torchscript"
    uri: str
    device: torch.device  # where the module is: images are moved there

    @property
    def is_standard(self) -> bool:
        return self.kind == "standard"

    def describe(self) -> str:
        if self.is_standard:
            return ("the standard FID Inception (TensorFlow-compatible InceptionV3 of 2015-12-05, 299 px "
                    "TF1-bilinear resize of uint8 images, pytorch-fid's and torch-fidelity's layout)")
        return f"a TorchScript network ({self.uri}): not the standard FID Inception, so not comparable to published scores"

    @torch.inference_mode()
    def __call__(self, images_B3HW_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool features, logits) as float64. The standard net's logits are the unbiased ones (IS's)."""
        images_B3HW_uint8 = images_B3HW_uint8.to(self.device)
        if self.is_standard:
            out = self.module(images_B3HW_uint8)
            return out.pool_BF.double(), out.logits_unbiased_BK.double()
        # A TorchScript network keeps its contract, float images in [-1, 1]; they are quantised all the same.
        pool, logits = self.module(images_B3HW_uint8.float() / 127.5 - 1.0)
        return pool.double(), logits.double()


def _is_torchscript(data: bytes) -> bool:
    """TorchScript archives hold their code (``<name>/code/...``) and constants.pkl; torch.save's state-dict
    archives hold data.pkl and tensors only."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return False
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    return any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names)


def _classes(state: object, uri: str, field_path: str, num_classes: int | None) -> int:
    """The classifier size of a state dict in the standard layout (its fc is K x 2,048)."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ConfigError(f"{field_path}: {uri} is not a state dict of tensors (got {type(state).__name__})")
    fc = state.get("fc.weight")
    if fc is None or fc.dim() != 2 or fc.shape[1] != POOL_DIM:
        raise ConfigError(f"{field_path}: {uri} is not the standard FID Inception's layout (no fc.weight of "
                          f"K x {POOL_DIM})")
    classes = int(fc.shape[0])
    if num_classes is not None and classes != num_classes:
        raise ConfigError(f"{field_path}: {uri} has {classes} classes, the standard FID Inception {num_classes}")
    return classes


def _check_layout(state: dict, expected: dict[str, torch.Tensor], uri: str, field_path: str) -> dict:
    """The state dict's tensors, checked key by key and shape by shape against the network's own
    (BatchNorm's ``num_batches_tracked`` counters may be there or not: one file has them, one does not)."""
    tensors = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(k for k in expected if k not in tensors and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in tensors if k not in expected)
    if missing or unexpected:
        first = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
        raise ConfigError(f"{field_path}: {uri} is not the standard FID Inception's layout ({first}; "
                          f"{len(missing)} missing, {len(unexpected)} unexpected keys)")
    for k, v in tensors.items():
        if v.shape != expected[k].shape:
            raise ConfigError(f"{field_path}: {uri} is not the standard FID Inception's layout ({k} is "
                              f"{tuple(v.shape)}, expected {tuple(expected[k].shape)})")
    return tensors


def load_scoring_net(uri: str, field_path: str = "data.inception_weights", num_classes: int | None = STANDARD_CLASSES,
                     device: torch.device | str = "cpu") -> ScoringNet:
    """The standard FID Inception from a standard weights file, or a TorchScript network returning
    (pool features, logits); anything else is a ConfigError naming ``field_path``. ``num_classes`` None
    accepts the standard layout with any classifier (an IS classifier fine-tuned on the data's classes)."""
    data = storage.read_bytes(uri)
    if _is_torchscript(data):
        try:
            module = torch.jit.load(io.BytesIO(data), map_location=device).eval()
        except RuntimeError as exc:
            raise ConfigError(f"{field_path}: {uri} is an unreadable TorchScript archive ({str(exc).splitlines()[0]})") from None
        return ScoringNet(module, "torchscript", uri, torch.device(device))
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes fail in many ways (KeyError, EOFError, ...): all refused
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{field_path}: {uri} is not a weights file torch loads safely (weights_only: "
                          f"{reason[:160]})") from None
    net = FIDInceptionV3(_classes(state, uri, field_path, num_classes))
    tensors = _check_layout(state, net.state_dict(), uri, field_path)
    net.load_state_dict(tensors, strict=False)  # every key was checked above; the counters are unused in eval
    return ScoringNet(net.eval().requires_grad_(False).to(device), "standard", uri, torch.device(device))
