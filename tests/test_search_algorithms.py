"""Search algorithms as data: every sampler and scheduler a sweep file names is accepted and built; bad
values and bad combinations are refused before Ray starts, with the field named."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

from harness.config import SAMPLERS, SCHEDULERS, load_sweep
from harness.objective import Objective
from harness.phase import Phase
from harness.searcher import make_sampler, make_scheduler, make_searcher
from tests.conftest import ROOT, write_sweep

SMOKE = ROOT / "search_spaces" / "smoke.yaml"
SAMPLER_TYPES = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                 "gp": optuna.samplers.GPSampler, "cmaes": optuna.samplers.CmaEsSampler,
                 "qmc": optuna.samplers.QMCSampler}


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_is_accepted_and_proposes_seeded_points(tmp_path, name):
    sweep = load_sweep(write_sweep(SMOKE, tmp_path / "s.yaml", **{"search.sampler": name}))
    assert sweep.search.sampler == name
    assert isinstance(make_sampler(name, seed=3), SAMPLER_TYPES[name])
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0), "y": optuna.distributions.FloatDistribution(0.0, 1.0)}

    def points(seed):
        searcher = make_searcher(space, [], Objective("fid"), seed=seed, final_stage=1, sampler=name, startup_trials=2)
        out = []
        for i in range(4):  # past the start-up trials, so the model-based samplers use their model
            out.append(searcher.suggest(f"t{i}"))
            searcher.on_trial_complete(f"t{i}", {"fid": out[-1]["x"] + out[-1]["y"], "status": "finished", "stage": 1})
        return out

    assert points(3) == points(3), "the same seed proposes the same points"


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_is_accepted_and_built(tmp_path, name):
    sweep = load_sweep(write_sweep(SMOKE, tmp_path / "s.yaml", **{"search.scheduler": name}))
    scheduler = make_scheduler(sweep.search.scheduler, max_epochs=9, grace_period=1, reduction_factor=3)
    if name == "none":
        assert scheduler is None
    elif name == "median":
        assert isinstance(scheduler, MedianStoppingRule)
    else:
        assert isinstance(scheduler, ASHAScheduler)
        # hyperband: asynchronous Hyperband, every bracket from rung 1 (1, 3, 9 epochs) down to one rung
        assert len(scheduler._brackets) == (3 if name == "hyperband" else 1)


BAD = [
    ({"search.sampler": "bayes"}, "search.sampler: 'bayes' is not one of tpe, random, gp, cmaes, qmc"),
    ({"search.scheduler": "pbt"}, "search.scheduler: 'pbt' is not one of asha, hyperband, median, none"),
    ({"search.reduction_factor": 1}, "search.reduction_factor: must be >= 2"),
    ({"search.confirm": {"top_k": 1, "seeds": 1}}, "search.confirm.seeds: must be 0 (off) or >= 2"),
    ({"search.confirm": {"top_k": 5, "seeds": 2}}, "search.confirm.top_k: 5 configs to confirm, but the search runs only"),
    ({"search.confirm": {"top_k": 1, "seeds": 2, "runs": 3}}, "search.confirm.runs: unknown key"),
    ({"search.confirm": "yes"}, "search.confirm: expected a mapping"),
    ({"search.sampler": "cmaes", "stage2.search": {"kl_weight": 2.0, "lr_g": 2e-4, "lr_d": 2e-4}},
     "search.sampler: cmaes needs at least two numeric parameters to search, stage2.search has 0"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_search_algorithm_settings_are_refused_before_ray_starts(tmp_path, overrides, message):
    sweep = write_sweep(SMOKE, tmp_path / "sweep.yaml", **overrides)
    out = subprocess.run([sys.executable, "harness/tune.py", "--sweep", sweep, "--storage", str(tmp_path / "runs")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "runs").exists(), "nothing written, no Ray started"


def test_the_searcher_evaluates_the_start_points_first_then_samples(tmp_path):
    sweep = load_sweep(write_sweep(SMOKE, tmp_path / "s.yaml", **{"stage1.start_points": [{"lr_g": 1e-3}]}))
    from harness.optuna_space import optuna_space

    searcher = make_searcher(optuna_space(sweep.stage1.search), sweep.start_points(Phase.STAGE1), Objective("fid"), seed=0,
                             final_stage=1)
    proposed = [searcher.suggest(f"t{i}") for i in range(3)]
    assert proposed[:2] == sweep.start_points(Phase.STAGE1)
    assert proposed[2] not in proposed[:2]  # then the sampler's own
