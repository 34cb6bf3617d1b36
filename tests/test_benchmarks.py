"""The throughput benchmark runs end to end and reports what docs/PERFORMANCE.md quotes."""

import json
import math
import subprocess
import sys

from tests.conftest import ROOT


def test_step_throughput_plain_reports_both_stages():
    out = subprocess.run(
        [sys.executable, "benchmarks/step_throughput.py", "--profile", "tiny", "--modes", "plain", "--steps", "2",
         "--warmup", "1", "--threads", "1", "--device", "cpu", "--batch-stage1", "8", "--batch-stage2", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    report = json.loads(out.stdout)
    assert report["machine"]["cuda"] is None and report["profile"] == "tiny"
    assert report["machine"]["matmul_peak"]["dtype"] == "float32" and report["machine"]["matmul_peak"]["gflop_per_s"] > 0
    for stage, batch in (("stage1", 8), ("stage2", 4)):
        plain = report["results"][stage]["plain"]
        assert plain["batch"] == batch and plain["finite_losses"] is True
        assert plain["ms_per_step"] > 0 and math.isclose(plain["img_per_s"], batch / plain["ms_per_step"] * 1000, rel_tol=0.02)
        assert "achieved_gflop_per_s" not in plain  # FLOP counts exist for the paper profile only


def test_fidelity_curve_reports_each_evaluation(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/fidelity_curve.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path),
         "--steps", "4", "--every", "2", "--batch-size", "8", "--param", "kl_weight=0.5", "--threads", "1",
         "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["step"] for line in lines[:-1]] == [2, 4]
    for line in lines[:-1]:
        assert 0.0 <= line["fidelity_shape"] <= 1.0 and line["fid"] > 0
    assert lines[-1]["chance"]["fidelity_shape"] == round(1 / 6, 4)


def test_fidelity_curve_refuses_a_sweep_without_shapes(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/fidelity_curve.py", "--sweep", "search_spaces/cub_paper.yaml", "--storage", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and "data.kind" in out.stderr


def test_generator_capacity_probe_reports_fidelity(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/generator_capacity.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path),
         "--steps", "4", "--every", "2", "--batch", "8", "--threads", "1", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert all(0.0 <= line["fidelity_position"] <= 1.0 and line["loss"] > 0 for line in lines)


def test_generator_capacity_refuses_a_size_the_dataset_lacks(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/generator_capacity.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path),
         "--image-size", "128", "--steps", "1", "--threads", "1", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2 and "--image-size" in out.stderr and "128" in out.stderr


def test_fidelity_curve_refuses_an_unknown_param(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/fidelity_curve.py", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path),
         "--param", "kl_wieght=0.1", "--threads", "1", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2 and "kl_wieght" in out.stderr and "kl_weight" in out.stderr
