"""The throughput benchmark runs end to end and reports what docs/PERFORMANCE.md quotes."""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.conftest import ROOT


def _bench(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=check)


def test_step_throughput_plain_reports_both_stages():
    out = _bench("step_throughput.py", "--profile", "tiny", "--modes", "plain", "--steps", "2", "--warmup", "1",
                 "--threads", "1", "--device", "cpu", "--batch-stage1", "8", "--batch-stage2", "4")
    report = json.loads(out.stdout)
    assert report["machine"]["cuda"] is None and report["profile"] == "tiny"
    assert report["machine"]["matmul_peak"]["dtype"] == "float32" and report["machine"]["matmul_peak"]["gflop_per_s"] > 0
    for stage, batch in (("stage1", 8), ("stage2", 4)):
        plain = report["results"][stage]["plain"]
        assert plain["batch"] == batch and plain["finite_losses"] is True
        assert plain["ms_per_step"] > 0 and math.isclose(plain["img_per_s"], batch / plain["ms_per_step"] * 1000, rel_tol=0.02)
        assert "achieved_gflop_per_s" not in plain  # FLOP counts exist for the paper profile only


def test_sweep_throughput_packs_k_trial_processes_and_reports_their_throughput():
    out = _bench("sweep_throughput.py", "--profiles", "tiny", "--trials", "1,2", "--seconds", "2", "--warmup", "1",
                 "--device", "cpu")
    report = json.loads(out.stdout)
    assert report["machine"]["device"] == "cpu" and report["machine"]["matmul_peak"]["gflop_per_s"] > 0
    tiny = report["results"]["tiny"]
    assert tiny["batch"] == 16 and tiny["gflop_per_image_step"] > 0  # torch's FLOP counter on one step
    one, two = tiny["packed"]
    assert (one["trials"], two["trials"]) == (1, 2) and len(two["steps_per_trial"]) == 2
    assert all(steps > 0 for row in (one, two) for steps in row["steps_per_trial"])
    rate = "trial_epochs_per_device_hour"
    assert one["speedup"] == 1.0 and two["speedup"] == round(two[rate] / one[rate], 2)
    assert one["trial_epochs_per_device_hour"] == round(one["img_per_s"] * 3600 / 3600, 1)  # an epoch: 3,600 scenes
    assert 0 < one["share_of_peak"] < 1 and one["gpu_util_pct"] is None  # no NVML figures on a CPU


@pytest.mark.slow
def test_search_efficiency_runs_each_method_and_confirms_the_picks(tmp_path):
    # A process of its own with its own local Ray (as a user runs it): a session-wide Ray started this
    # early in the suite keeps the `ray start` head of tests/test_job_submit.py from getting a job agent.
    out = tmp_path / "se"
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    try:
        done = subprocess.run(
            [sys.executable, "benchmarks/search_efficiency.py", "--sweep", "search_spaces/tiny.yaml", "--methods",
             "random,tpe+asha", "--reps", "1", "--budget", "3", "--epochs", "1", "--n", "200", "--confirm-seeds", "2",
             "--out", str(out)],
            cwd=ROOT, env={**os.environ, "RAY_TMPDIR": ray_tmp}, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["methods"]) == {"random", "tpe+asha"}
    for m in summary["methods"].values():
        assert m["reps"] == 1 and len(m["confirmed_picks"]) == 1 and m["median_final_incumbent"] > 0
    assert summary["methods"]["random"]["budget_ratio_to_random"] == 1.0
    assert summary["paper_defaults_confirmed"]["is_default"] and len(summary["paper_defaults_confirmed"]["values"]) == 2
    full = json.loads((out / "search_efficiency.json").read_text())
    for rep in full["repetitions"]:  # an anytime point after each finished trial, the budget spent in order
        spent = [p["trial_epochs"] for p in rep["points"]]
        # the budget of 3 epochs, give or take the evaluations of the 2 trials in flight when it ran out
        assert spent == sorted(spent) and 1 <= rep["trial_epochs"] <= 3 + 2 and spent[-1] == rep["trial_epochs"]
    assert (out / "search_efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_live_searches_over_a_recorded_grid_train_only_its_configs_and_match_their_replay(tmp_path):
    # A grid recorded here (3 configs x the seeds 0 and 1, 2 epochs), then live searches over it. One trial at a
    # time, random search proposes what its replay proposes, every trial trains a recorded config with the sweep's
    # train.seed (0) and reproduces the recorded values exactly (same machine, one thread): the live curve is the
    # replay's.
    _bench("objective_noise.py", "--sweep", "search_spaces/tiny.yaml", "--configs", "3", "--seeds", "2", "--epochs",
           "2", "--n", "40", "--threads", "1", "--generators", "live", "--no-large-draw", "--rescore-draws", "1",
           "--storage", str(tmp_path / "store"), "--out", str(tmp_path / "grid"))
    grid = tmp_path / "grid" / "grid.jsonl"
    refused = _bench("search_efficiency.py", "--over", str(grid), "--sweep", "search_spaces/tiny.yaml", "--epochs", "3",
                     "--budget", "6", check=False)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1] == (
        f"--epochs: the grid {grid} recorded 2 epochs per run, got 3")
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    try:
        done = subprocess.run(
            [sys.executable, "benchmarks/search_efficiency.py", "--over", str(grid), "--sweep", "search_spaces/tiny.yaml",
             "--methods", "random,random+asha", "--reps", "1", "--budget", "6", "--epochs", "2", "--n", "40",
             "--concurrent", "1", "--no-start-points", "--replay-reps", "10", "--out", str(tmp_path / "over")],
            cwd=ROOT, env={**os.environ, "RAY_TMPDIR": ray_tmp}, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "over" / "replay_check.json").read_text())
    recorded = [json.loads(line)["params"] for line in grid.read_text().splitlines()]
    trained = [json.loads(p.read_text())["params"] for p in (tmp_path / "over").glob("random-r0/trials/*/params.json")]
    assert len(trained) >= 2 and all(p in recorded for p in trained)
    assert result["seen_seed"] == 0 and result["settings"]["start_points"] is False
    for method in ("random", "random+asha"):
        r = result["methods"][method]
        n = r["live_trials"][0]
        assert r["reproduction_max_gap"] == 0.0 and r["trials_reproduced_exactly"] == f"{n} of {n}"
        assert len(r["live_curves"][0]) == 6
    random = result["methods"]["random"]
    assert random["live_curves"] == random["same_seed_replay_curves"] and random["live_picks"] == random["same_seed_replay_picks"]
    assert 0.0 <= random["replay_median_within_live_spread"] <= 1.0
    assert (tmp_path / "over" / "replay_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_efficiency_refuses_unknown_methods():
    out = _bench("search_efficiency.py", "--methods", "random,annealing", check=False)
    assert out.returncode == 2 and "--methods" in out.stderr and "annealing" in out.stderr


def test_objective_noise_records_a_tiny_grid_and_measures_every_candidate(tmp_path):
    out = _bench("objective_noise.py", "--configs", "2", "--seeds", "2", "--epochs", "2", "--n", "40",
                 "--eval-samples", "4", "--rescore-draws", "2", "--threads", "1", "--storage", str(tmp_path / "store"),
                 "--out", str(tmp_path / "out"))
    report = json.loads(out.stdout)
    assert report["configs"] == 2 and report["seeds"] == 2 and report["machine"]["cpu"]
    grid = [json.loads(line) for line in (tmp_path / "out" / "grid.jsonl").read_text().splitlines()]
    assert len(grid) == 4 and {(r["config"], r["seed"]) for r in grid} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    finished = [r for r in grid if r["status"] == "finished"]
    for r in finished:
        assert [e["epoch"] for e in r["curve"]] == [1, 2]
        assert {"live/base", "ema0.999/base", "live/large"} <= set(r["curve"][-1]["evals"])
        assert len(r["rescored"]["live/base"]) == 2
    full = json.loads((tmp_path / "out" / "objective_noise.json").read_text())
    base = full["baseline"]
    assert base["metric"] == "fid" and base["key"] == "live/base" and base["window"] == 1
    assert set(base["tau_by_epoch"]) == {"1", "2"} and base["tau_by_epoch"]["2"] == 1.0  # the last epoch agrees with itself
    assert (tmp_path / "out" / "objective_noise.png").stat().st_size > 0
    # A second run resumes: nothing left to train, the same grid.
    again = _bench("objective_noise.py", "--configs", "2", "--seeds", "2", "--epochs", "2", "--n", "40",
                   "--eval-samples", "4", "--rescore-draws", "2", "--threads", "1", "--storage", str(tmp_path / "store"),
                   "--out", str(tmp_path / "out"))
    assert json.loads(again.stdout)["baseline"] == base


def test_objective_noise_records_only_the_generators_and_seeds_asked_for(tmp_path):
    # The grid's runs in order are (config 0, seed 5), (1, 5), (0, 6), (1, 6): shard 1 of 2 records the second and
    # the fourth.
    out = _bench("objective_noise.py", "--configs", "2", "--seeds", "2", "--first-seed", "5", "--shard", "1/2",
                 "--epochs", "2", "--n", "40", "--eval-samples", "4", "--rescore-draws", "1", "--threads", "1",
                 "--generators", "ema0.999", "--no-large-draw", "--storage", str(tmp_path / "store"),
                 "--out", str(tmp_path / "out"))
    grid = [json.loads(line) for line in (tmp_path / "out" / "grid.jsonl").read_text().splitlines()]
    assert {(r["config"], r["seed"]) for r in grid} == {(1, 5), (1, 6)}
    assert json.loads(out.stdout)["runs"] == 2 and "--analyse-only" in json.loads(out.stdout)["next"]  # not analysed alone
    for r in grid:
        if r["status"] == "finished":  # live is always scored; no large draw
            assert all(set(e["evals"]) == {"live/base", "ema0.999/base"} for e in r["curve"])
            assert set(r["rescored"]) == {"live/base", "ema0.999/base"}
    refused = _bench("objective_noise.py", "--generators", "live,ema0.5", check=False)
    assert refused.returncode == 2 and "--generators: unknown ema0.5" in refused.stderr
    refused = _bench("objective_noise.py", "--shard", "2/2", check=False)
    assert refused.returncode == 2 and "--shard: I/N with 0 <= I < N, got 2/2" in refused.stderr


def test_replayed_searches_find_the_clearly_best_config_of_a_recorded_grid(tmp_path):
    # A grid as objective_noise.py records it: 4 configs x 3 seeds x 3 epochs; config 2 (lr_g 1e-3) is best at
    # every epoch and seed, the seeds add a little noise.
    rng = np.random.default_rng(0)
    lr_gs, level = [2e-4, 5e-5, 1e-3, 3e-4], [600.0, 700.0, 300.0, 650.0]
    grid = tmp_path / "grid.jsonl"
    with open(grid, "w") as f:
        for c, (lr_g, base) in enumerate(zip(lr_gs, level)):
            params = {"kl_weight": 2.0, "lr_g": lr_g, "lr_d": 2e-4, "z_dim": 8, "c_dim": 8}
            for seed in range(3):
                curve = [{"epoch": e, "evals": {"live/base": {"fid": base * (1.5 - 0.2 * e) + rng.normal(0, 5),
                                                              "fidelity": 0.9 if c == 2 else 0.3}}}
                         for e in (1, 2, 3)]
                f.write(json.dumps({"config": c, "seed": seed, "params": params, "status": "finished",
                                    "curve": curve, "rescored": {}}) + "\n")
    out = _bench("search_efficiency.py", "--replay", str(grid), "--sweep", "search_spaces/tiny.yaml", "--methods",
                 "random,tpe,random+asha,random+median", "--reps", "20", "--budget", "24", "--grace-period", "1",
                 "--reduction-factor", "2", "--out", str(tmp_path / "out"))
    result = json.loads((tmp_path / "out" / "search_replay.json").read_text())
    methods = result["objectives"]["live/base:fid:1"]["methods"]
    assert set(methods) == {"random", "tpe", "random+asha", "random+median"}
    # 24 trial-epochs is 8 full trials over 4 configs: random search nearly always meets config 2.
    assert methods["random"]["share_picking_the_best_config"] >= 0.8 and methods["random"]["median_pick_rank"] == 1
    assert methods["random"]["median_pick_fidelity"] == pytest.approx(0.9)
    # The grid predates conditioning: the yardstick across objectives is the live generator's fidelity.
    assert result["objectives"]["live/base:fid:1"]["yardstick"] == "live/base fidelity"
    assert methods["random"]["median_pick_yardstick"] == pytest.approx(0.9)
    # Its confirmed value is config 2's mean over the 2 seeds the search did not see, at epoch 3: about 300 * 0.9.
    assert methods["random"]["median_confirmed"] == pytest.approx(270.0, abs=15.0)
    assert len(methods["tpe"]["curve_median"]) == 24 and "p_vs_random" in methods["tpe"]
    assert (tmp_path / "out" / "search_replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out.stdout)["objectives"]["live/base:fid:1"]["random"]["median_pick_rank"] == 1
    # Without the sweep's start points, random search's first trial is its sampler's, not the paper defaults: with
    # a budget of one trial it then picks config 2 in about 1 of 4 repetitions, never in all of them.
    _bench("search_efficiency.py", "--replay", str(grid), "--sweep", "search_spaces/tiny.yaml", "--methods", "random",
           "--reps", "40", "--budget", "3", "--no-start-points", "--out", str(tmp_path / "bare"))
    bare = json.loads((tmp_path / "bare" / "search_replay.json").read_text())
    assert bare["start_points"] is False
    assert 0.05 < bare["objectives"]["live/base:fid:1"]["methods"]["random"]["share_picking_the_best_config"] < 0.6


def test_inception_throughput_reports_seconds_per_thousand_images():
    out = _bench("inception_throughput.py", "--images", "4", "--size", "32", "--batch", "2", "--threads", "1")
    figures = json.loads(out.stdout)
    assert figures["images"] == 4 and figures["seconds"] > 0
    assert figures["seconds_per_1000"] == pytest.approx(1000 * figures["seconds"] / 4, rel=0.05)


def test_the_live_benchmarks_budget_counts_each_epoch_once():
    # Tune hands a finished function trainable's last result to the stopper twice (the second time with done=True):
    # counting reports, a budget of 6 epochs stopped after 5 real ones here.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from search_efficiency import EpochBudget
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    budget = EpochBudget(6)
    for trial in ("a", "b"):
        for epoch in (1, 2):
            budget(trial, {"training_iteration": epoch})
        budget(trial, {"training_iteration": 2, "done": True})  # the duplicate final result
    assert budget.spent == 4 and not budget.stop_all()
    budget("c", {"training_iteration": 1})
    budget("c", {"training_iteration": 2})
    assert budget.spent == 6 and budget.stop_all()
