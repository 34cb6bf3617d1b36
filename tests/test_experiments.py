"""Smoke tests of the research probes in experiments/: each runs a few steps end to end, prints what
docs/RESEARCH.md quotes, and refuses bad input with one line. Seconds each; the findings themselves
come from long runs (docs/RESEARCH.md), not from these tests."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def _probe(module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=check)


def test_fidelity_curve_reports_each_evaluation(tmp_path):
    out = _probe("fidelity_curve", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--steps", "4",
                 "--every", "2", "--batch-size", "8", "--param", "kl_weight=0.5", "--threads", "1", "--device", "cpu")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["step"] for line in lines[:-1]] == [2, 4]
    for line in lines[:-1]:
        assert 0.0 <= line["fidelity_shape"] <= 1.0 and line["fid"] > 0
    assert lines[-1]["chance"]["fidelity_shape"] == round(1 / 6, 4)


def test_fidelity_curve_refuses_a_sweep_without_shapes(tmp_path):
    out = _probe("fidelity_curve", "--sweep", "search_spaces/cub_paper.yaml", "--storage", str(tmp_path),
                 check=False)
    assert out.returncode == 2 and "data.kind" in out.stderr


def test_generator_capacity_probe_reports_fidelity(tmp_path):
    out = _probe("generator_capacity", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--steps",
                 "4", "--every", "2", "--batch", "8", "--threads", "1", "--device", "cpu")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert all(0.0 <= line["fidelity_position"] <= 1.0 and line["loss"] > 0 for line in lines)


def test_generator_capacity_refuses_a_size_the_dataset_lacks(tmp_path):
    out = _probe("generator_capacity", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path),
                 "--image-size", "128", "--steps", "1", "--threads", "1", "--device", "cpu", check=False)
    assert out.returncode == 2 and "--image-size" in out.stderr and "128" in out.stderr


def test_fidelity_curve_refuses_an_unknown_param(tmp_path):
    out = _probe("fidelity_curve", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--param",
                 "kl_wieght=0.1", "--threads", "1", "--device", "cpu", check=False)
    assert out.returncode == 2 and "kl_wieght" in out.stderr and "kl_weight" in out.stderr


def _attribute_probe(tmp_path, *args):
    out = _probe("attribute_probe", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--threads",
                 "1", "--device", "cpu", *args)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_attribute_probe_gan_reports_fidelity_and_what_d_checks(tmp_path):
    lines = _attribute_probe(tmp_path, "--probe", "gan", "--steps", "4", "--every", "2")
    assert [line["step"] for line in lines] == [2, 4]
    for line in lines:
        assert 0.0 <= line["fidelity_shape"] <= 1.0
        assert set(line["d_checks"]) == {"shape", "colour", "size", "position", "background"}
        assert all(0.0 <= c["prefers_true"] <= 1.0 for c in line["d_checks"].values())


def test_attribute_probe_supervised_d_reports_what_it_checks(tmp_path):
    first, last = _attribute_probe(tmp_path, "--probe", "d-supervised", "--attribute", "background",
                                   "--steps", "4", "--every", "2")
    assert last["attribute"] == "background" and 0.0 <= last["d_checks"]["prefers_true"] <= 1.0
    assert [first["step"], last["step"]] == [2, 4]


def test_attribute_probe_g_judge_reports_fidelity(tmp_path):
    lines = _attribute_probe(tmp_path, "--probe", "g-judge", "--steps", "4", "--every", "4")
    assert len(lines) == 1 and lines[0]["step"] == 4 and 0.0 <= lines[0]["fidelity_colour"] <= 1.0


def test_fid_conditioning_shows_fid_blind_to_shuffled_captions(tmp_path):
    out = _probe("fid_conditioning", "--sweep", "search_spaces/tiny.yaml", "--storage", str(tmp_path), "--n", "24",
                 "--threads", "1", "--device", "cpu")
    lines = {(line["stand_in"], line["stage"]): line for line in map(json.loads, out.stdout.splitlines())}
    assert len(lines) == 6
    for stage in (1, 2):
        real, shuffled = lines[("real", stage)], lines[("real, captions shuffled", stage)]
        # The same images with other captions: the same FID, while fidelity falls.
        assert shuffled["fid"] == real["fid"] and shuffled["fidelity"] < real["fidelity"]
        assert lines[("other scenes", stage)]["fid"] > real["fid"]
