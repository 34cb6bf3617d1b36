"""The objective's levers: the generator's moving average (train.g_ema) and KID, against hand-computed values."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from harness.config import load_sweep
from harness.errors import ConfigError
from harness.generator_ema import GeneratorEMA
from harness.hyperparams import from_sampled
from harness.loop import LoopSpec, StageLoop
from harness.metrics.distances import kernel_inception_distance, polynomial_mmd2
from tests.conftest import ROOT


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def _set(net: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
        net[1].running_mean.fill_(value)


def test_ema_equals_the_hand_computed_warmed_average():
    net = _tiny_net()
    _set(net, 1.0)
    ema = GeneratorEMA(net, decay=0.9, bn="average")  # starts at the live weights: 1.0
    _set(net, 3.0)
    ema.update(net)  # update 0: keep min(0.9, 1/10) = 0.1 -> 0.1 * 1 + 0.9 * 3 = 2.8
    _set(net, 5.0)
    ema.update(net)  # update 1: keep min(0.9, 2/11) -> (2/11) * 2.8 + (9/11) * 5
    expected = (2 / 11) * 2.8 + (9 / 11) * 5.0
    for p in ema.module.parameters():
        assert torch.allclose(p, torch.full_like(p, expected))
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), expected))  # statistics averaged too
    for _ in range(200):
        ema.update(net)
    assert torch.allclose(next(ema.module.parameters()), torch.full((2, 2), 5.0), atol=1e-4)


def test_ema_with_copied_batchnorm_statistics_takes_the_live_ones():
    net = _tiny_net()
    _set(net, 1.0)
    ema = GeneratorEMA(net, decay=0.9, bn="copy")
    _set(net, 3.0)
    ema.update(net)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 3.0))
    assert torch.allclose(ema.module[0].weight, torch.full((2, 2), 2.8))


def _loop(g_ema: float) -> StageLoop:
    sweep = load_sweep(str(ROOT / "search_spaces" / "tiny.yaml"))
    train = dataclasses.replace(sweep.train, g_ema=g_ema, batch_size=4)
    spec = LoopSpec.from_sweep(sweep, from_sampled(1, sweep.defaults(1)), train)
    return StageLoop(spec, text_dim=8, word_dim=0, device=torch.device("cpu"))


def _batch(seed: int, size: int):
    from harness.data.dataset import Batch

    g = torch.Generator().manual_seed(seed)
    return Batch(images_B3HW=torch.rand(4, 3, size, size, generator=g) * 2 - 1, text_BD=torch.randn(4, 8, generator=g),
                 keys_B=torch.arange(4))


def test_the_moving_average_is_what_gets_evaluated_and_it_survives_a_resume():
    loop = _loop(0.99)
    for step in range(3):
        loop.train_step(_batch(step, loop.image_size))
    text = torch.randn(5, 8)
    sampled, _ = loop.sample(text)
    from_ema, _ = loop.sample(text, using=loop.ema.module)
    from_live, _ = loop.sample(text, using=loop.g)
    assert torch.equal(sampled, from_ema) and not torch.allclose(sampled, from_live)
    state = loop.state_dict()
    resumed = _loop(0.99)
    resumed.load_state_dict(state)
    for a, b in zip(resumed.ema.module.state_dict().values(), loop.ema.module.state_dict().values()):
        assert torch.equal(a, b)
    assert int(resumed.ema.averaged.n_averaged) == int(loop.ema.averaged.n_averaged) == 4
    # The resumed average goes on from the restored one, with the restored update count (its fourth: keep 4/13).
    before = [p.detach().clone() for p in resumed.ema.module.parameters()]
    resumed.train_step(_batch(9, resumed.image_size))
    keep = min(0.99, 4 / 13)
    for old, live, avg in zip(before, resumed.g.parameters(), resumed.ema.module.parameters()):
        assert torch.allclose(avg, keep * old + (1 - keep) * live.detach(), atol=1e-6)
    with pytest.raises(ConfigError, match="g_ema"):
        _loop(0.99).load_state_dict(_loop(0.0).state_dict())


def test_g_ema_outside_its_range_is_refused():
    sweep = load_sweep(str(ROOT / "search_spaces" / "tiny.yaml"))
    with pytest.raises(ConfigError, match="g_ema"):
        dataclasses.replace(sweep.train, g_ema=1.0)
    with pytest.raises(ConfigError, match="g_ema_bn"):
        dataclasses.replace(sweep.train, g_ema_bn="standing")


def test_kid_matches_a_hand_computed_unbiased_mmd():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([[2.0, 0.0], [0.0, 0.0]])
    k = lambda a, b: (a @ b / 2 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(3) for j in range(3) if i != j) / 6
    yy = sum(k(y[i], y[j]) for i in range(2) for j in range(2) if i != j) / 2
    xy = sum(k(a, b) for a in x for b in y) / 6
    assert polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy)
    same = np.random.default_rng(0).normal(size=(400, 4))
    mean, sd = kernel_inception_distance(same[:200], same[200:], subsets=20)
    assert abs(mean) < 3 * sd + 1e-3 and sd > 0  # one distribution: KID near zero, subsets differ
    shifted_mean, _ = kernel_inception_distance(same[:200] + 1.0, same[200:], subsets=20)
    assert shifted_mean > mean + 10 * sd
