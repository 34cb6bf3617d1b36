"""Confirmation runs: seed statistics with hand-computed values, the verdict, ranking, candidates, config ids."""

from __future__ import annotations

import math

import pytest

from harness.confirm import (
    SeedSummary,
    compare_to_defaults,
    confirmation_candidates,
    confirmation_seeds,
    rank_confirmed,
)
from harness.objective import Objective
from harness.phase import Phase, Source
from harness.results import config_id

FID, FIDELITY = Objective("fid"), Objective("fidelity")


def test_seed_summary_is_the_mean_sample_sd_and_students_t_interval():
    s = SeedSummary.of([1.0, 2.0, 3.0])
    # mean 2, sample sd 1, t(0.975, 2) = 4.3027, half-width 4.3027 / sqrt(3) = 2.4841
    assert s.n == 3 and s.mean == 2.0 and s.sd == pytest.approx(1.0)
    assert s.low == pytest.approx(2.0 - 2.4841, abs=1e-4) and s.high == pytest.approx(2.0 + 2.4841, abs=1e-4)
    two = SeedSummary.of([10.0, 14.0])  # sd 2.828, t(0.975, 1) = 12.706, half = 12.706 * 2.828 / 1.414 = 25.41
    assert two.high - two.mean == pytest.approx(25.412, abs=1e-3)
    one = SeedSummary.of([5.0])
    assert one.low == one.high == 5.0 and math.isnan(one.sd)


def test_a_positive_metrics_interval_stays_positive_and_a_shares_stays_inside_0_1():
    # Two seeds of FID, 10 and 40: the plain interval is 25 +- 12.706 * 21.21 / 1.414 = 25 +- 190.6, below zero.
    assert SeedSummary.of([10.0, 40.0]).low == pytest.approx(25.0 - 190.59, abs=0.01)
    # On the log scale: logs 2.3026 and 3.6889, mean 2.9957 (ln 20), sd 0.9803, half 12.706 * 0.9803 / 1.414 = 8.807;
    # exp(2.9957 -+ 8.807) = 0.002993 and 133653. The mean and sd stay those of the values.
    log = SeedSummary.of([10.0, 40.0], "log")
    assert log.mean == 25.0 and log.sd == pytest.approx(21.213, abs=1e-3) and log.scale == "log"
    assert log.low == pytest.approx(0.0029928, rel=1e-4) and log.high == pytest.approx(133653.0, rel=1e-4)
    # Fidelity 0.5 and 0.9 on the logit scale: logits 0 and 2.1972, half 13.959: sigmoid(1.0986 -+ 13.959).
    share = SeedSummary.of([0.5, 0.9], "logit")
    assert share.low == pytest.approx(2.5985e-6, rel=1e-3) and share.high == pytest.approx(0.99999971, abs=1e-8)
    assert 0 < share.low < share.high < 1 and "logit" in share.method
    # A diverged run scores 0 fidelity: the logit scale moves it inside [0, 1]; a log interval of a value at 0 is
    # the plain one.
    assert 0 < SeedSummary.of([0.0, 0.8], "logit").low
    assert SeedSummary.of([0.0, 5.0], "log").scale == "linear"
    assert FID.interval_scale == "log" and FIDELITY.interval_scale == "logit" and Objective("kid").interval_scale == "linear"


def test_verdict_says_better_worse_or_within_noise_with_welchs_test():
    defaults = [1311.0, 1217.0, 1405.0]
    better = compare_to_defaults([900.0, 910.0, 905.0], defaults, FID)
    assert better.outcome == "better" and better.p_value < 0.05
    assert better.sentence.startswith("Beats the paper defaults beyond seed noise") and "Welch" in better.sentence
    worse = compare_to_defaults([1900.0, 1950.0, 1920.0], defaults, FID)
    assert worse.outcome == "worse" and worse.sentence.startswith("Worse than the paper defaults")
    # The measurement: the demo winner 1190 +- 126 against the defaults 1311 +- 94, 3 seeds each.
    noise = compare_to_defaults([1064.0, 1190.0, 1316.0], defaults, FID)
    assert noise.outcome == "within_noise" and noise.p_value > 0.05
    assert noise.sentence.startswith("Not distinguishable from the paper defaults")
    # Higher is better for fidelity: the direction flips.
    assert compare_to_defaults([0.9, 0.92, 0.91], [0.5, 0.52, 0.51], FIDELITY).outcome == "better"
    assert compare_to_defaults([0.9], [0.5, 0.6], FIDELITY).outcome == "untested"


def _rows(trial_id, cid, seed, values, phase=Phase.STAGE1, stage=1, source=Source.CONFIRM, status="finished",
          params=None):
    out = []
    for epoch, v in enumerate(values, 1):
        last = epoch == len(values)
        out.append({"trial_id": trial_id, "phase": phase, "stage": stage, "epoch": epoch, "fid": v,
                    "status": status if last else "running", "source": source, "train_seed": seed, "config_id": cid,
                    **{f"param.{k}": x for k, x in (params or {"lr": 1e-4}).items()}})
    return out


def test_rank_confirmed_scores_each_run_by_its_last_evaluation_and_ranks_by_mean():
    rows = (_rows("d1", "dflt", 1, [900.0, 500.0]) + _rows("d2", "dflt", 2, [900.0, 700.0])
            + _rows("a1", "aaa", 1, [100.0, 300.0]) + _rows("a2", "aaa", 2, [900.0, 320.0])
            + _rows("b1", "bbb", 1, [900.0, 1e6], status="diverged") + _rows("b2", "bbb", 2, [100.0, 200.0])
            + _rows("c1", "ccc", 1, [100.0])  # still running (no finished evaluation): not scored
            + _rows("s1", "aaa", 0, [50.0], source=Source.SEARCH))  # search rows never enter the confirmed ranking
    rows[-2]["status"] = "running"
    ranked = rank_confirmed(rows, Phase.STAGE1, FID, "dflt")
    assert [c.config_id for c in ranked] == ["aaa", "dflt", "bbb"]  # a config with a diverged seed ranks last
    a = ranked[0]
    assert a.values == (300.0, 320.0) and a.seeds == (1, 2) and a.summary.mean == 310.0 and a.best_trial == "a1"
    assert ranked[1].is_default and ranked[1].verdict.outcome == "reference"
    assert ranked[2].diverged == 1 and ranked[2].values == (1e6, 200.0)
    assert a.params == {"lr": 1e-4} and a.summary.scale == "log" and a.summary.low > 0


def test_candidates_are_the_defaults_then_the_best_distinct_non_diverged_search_configs():
    defaults = {"lr": 2e-4, "dim": 100}
    ranked = [{"final_status": "finished", "param.lr": 2e-4, "param.dim": 100.0},  # the defaults again
              {"final_status": "diverged", "param.lr": 9e-3, "param.dim": 8},
              {"final_status": "stopped", "param.lr": 5e-4, "param.dim": 64},
              {"final_status": "finished", "param.lr": 5e-4, "param.dim": 64},  # same config once
              {"final_status": "finished", "param.lr": 1e-4, "param.dim": 32},
              {"final_status": "finished", "param.lr": 3e-4, "param.dim": 16}]
    assert confirmation_candidates(ranked, defaults, 2) == [defaults, {"lr": 5e-4, "dim": 64},
                                                            {"lr": 1e-4, "dim": 32}]
    assert config_id({"dim": 100, "lr": 2e-4}) == config_id({"lr": 2e-4, "dim": 100.0})
    assert config_id({"flag": True}) != config_id({"flag": 1.0})
    assert confirmation_seeds(0, 3) == [1, 2, 3]
