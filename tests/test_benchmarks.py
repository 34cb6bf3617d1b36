"""The throughput benchmark runs end to end and reports what docs/PERFORMANCE.md quotes."""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

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


def test_fidelity_curve_reports_each_evaluation(tmp_path):
    out = _bench("fidelity_curve.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--steps", "4",
                 "--every", "2", "--batch-size", "8", "--param", "kl_weight=0.5", "--threads", "1", "--device", "cpu")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["step"] for line in lines[:-1]] == [2, 4]
    for line in lines[:-1]:
        assert 0.0 <= line["fidelity_shape"] <= 1.0 and line["fid"] > 0
    assert lines[-1]["chance"]["fidelity_shape"] == round(1 / 6, 4)


def test_fidelity_curve_refuses_a_sweep_without_shapes(tmp_path):
    out = _bench("fidelity_curve.py", "--sweep", "search_spaces/cub_paper.yaml", "--storage", str(tmp_path),
                 check=False)
    assert out.returncode == 2 and "data.kind" in out.stderr


def test_generator_capacity_probe_reports_fidelity(tmp_path):
    out = _bench("generator_capacity.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--steps",
                 "4", "--every", "2", "--batch", "8", "--threads", "1", "--device", "cpu")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert all(0.0 <= line["fidelity_position"] <= 1.0 and line["loss"] > 0 for line in lines)


def test_generator_capacity_refuses_a_size_the_dataset_lacks(tmp_path):
    out = _bench("generator_capacity.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path),
                 "--image-size", "128", "--steps", "1", "--threads", "1", "--device", "cpu", check=False)
    assert out.returncode == 2 and "--image-size" in out.stderr and "128" in out.stderr


def test_fidelity_curve_refuses_an_unknown_param(tmp_path):
    out = _bench("fidelity_curve.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--param",
                 "kl_wieght=0.1", "--threads", "1", "--device", "cpu", check=False)
    assert out.returncode == 2 and "kl_wieght" in out.stderr and "kl_weight" in out.stderr


def _attribute_probe(tmp_path, *args):
    out = _bench("attribute_probe.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--threads",
                 "1", "--device", "cpu", *args)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_attribute_probe_gan_reports_fidelity_and_what_d_checks(tmp_path):
    lines = _attribute_probe(tmp_path, "--probe", "gan", "--steps", "4", "--every", "2")
    assert [line["step"] for line in lines] == [2, 4]
    for line in lines:
        assert 0.0 <= line["fidelity_shape"] <= 1.0
        assert set(line["d_checks"]) == {"shape", "colour", "size", "position", "background"}
        assert all(0.0 <= c["prefers_true"] <= 1.0 for c in line["d_checks"].values())


def test_attribute_probe_supervised_d_learns_an_easy_attribute(tmp_path):
    # The background is a whole-image colour: D learns to check it in a couple of hundred steps.
    first, last = _attribute_probe(tmp_path, "--probe", "d-supervised", "--attribute", "background",
                                   "--steps", "200", "--every", "100")
    assert last["attribute"] == "background" and last["d_checks"]["prefers_true"] >= 0.9
    assert last["d_checks"]["gap"] > first["d_checks"]["gap"] > 0


def test_attribute_probe_g_judge_reports_fidelity(tmp_path):
    lines = _attribute_probe(tmp_path, "--probe", "g-judge", "--steps", "4", "--every", "4")
    assert len(lines) == 1 and lines[0]["step"] == 4 and 0.0 <= lines[0]["fidelity_colour"] <= 1.0


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


def test_search_efficiency_refuses_unknown_methods():
    out = _bench("search_efficiency.py", "--methods", "random,annealing", check=False)
    assert out.returncode == 2 and "--methods" in out.stderr and "annealing" in out.stderr
