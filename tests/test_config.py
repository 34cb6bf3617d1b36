"""Sweep files and configs: a bad file or field is refused before Ray starts with one line naming it;
shipped files and the hyperparameter defaults are the paper's; sampled values become typed ones."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from harness.errors import ConfigError
from harness.hyperparams import Stage1Hyperparams, Stage2Hyperparams, kind, names, paper_defaults
from harness.phase import Phase, Source
from tests.conftest import ROOT, write_sweep

SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def _sweep_file(tmp_path: pathlib.Path, **overrides) -> str:
    return write_sweep(SMOKE, tmp_path / "sweep.yaml", **overrides)


BAD_SWEEPS = [
    ({"data.colour": "red"}, "data.colour: unknown key"),
    ({"stage1.search.momentum": {"distribution": "uniform", "low": 0, "high": 1, "default": 0.5}},
     "stage1.search.momentum: unknown parameter"),
    ({"stage1.search.kl_weight.low": 20.0}, "stage1.search.kl_weight.low: must be below high"),
    ({"stage1.search.lr_g.low": 0.0}, "stage1.search.lr_g.low: a loguniform range must be > 0"),
    ({"train.batch_size": "sixteen"}, "train.batch_size: expected int"),
    ({"search.num_samples": 0}, "search.num_samples: must be >= 1"),
]


@pytest.mark.parametrize("override,message", BAD_SWEEPS)
def test_bad_sweep_file_is_rejected_before_ray_starts(tmp_path, override, message):
    (key, value), = override.items()
    out = subprocess.run([sys.executable, "harness/tune.py", "--sweep", _sweep_file(tmp_path, **{key: value}),
                          "--storage", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "runs").exists(), "nothing written, no Ray started"


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_file_is_valid(path):
    from harness.config import load_sweep

    sweep = load_sweep(str(path))
    # The sizes z_dim and c_dim are scaled to each profile and stage2_init is the demo's choice; the
    # rest of every file's first point is the paper's.
    for stage in (1, 2):
        paper = dataclasses.asdict(paper_defaults(stage))
        scaled = {n for n in names(1) if kind(1, n) is int} | {f.name for f in dataclasses.fields(Stage2Hyperparams)
                                                               if kind(2, f.name) is str}
        for name, value in sweep.defaults(stage).items():
            if name not in scaled:
                assert value == paper[name], f"stage{stage}.{name}: the first point must be the paper's value"


def test_the_hyperparameter_defaults_are_the_papers():
    """docs/REFERENCE.md: the released configs' values, written here once more on purpose."""
    assert paper_defaults(1) == Stage1Hyperparams(kl_weight=2.0, lr_g=2e-4, lr_d=2e-4, z_dim=100, c_dim=128)
    assert paper_defaults(2) == Stage2Hyperparams(kl_weight=2.0, lr_g=2e-4, lr_d=2e-4, c_dim=128, z_dim_stage2=0,
                                                  attention=False, stage2_init="scratch")


MALFORMED = [  # (file contents as bytes, the field or file the one-line error names)
    (b"\xff\xfename: x\n", "not UTF-8 text"),
    (b"", "the sweep file is empty"),
    (b"   \n\n  \n", "the sweep file is empty"),
    (b"\t\n", "not valid YAML"),
    (b"# only a comment\n", "the sweep file is empty"),
    (b"name: x\nstage1:\n  search:\n    kl_weight: {distribution: loguniform, low: 0.1, high: .inf, default: 2.0}\n",
     "stage1.search.kl_weight.high: must be a finite number, got inf"),
    (b"name: x\nstage1:\n  search:\n    lr_g: {distribution: uniform, low: .nan, high: 0.1, default: 0.01}\n",
     "stage1.search.lr_g.low: must be a finite number, got nan"),
    (b"name: x\nstage1:\n  search:\n    c_dim: {distribution: categorical, choices: [32, 64], default: 128}\n",
     "stage1.search.c_dim.default: 128 is not among the choices"),
    (b"name: x\nstage1:\n  epochs: 2\n  epochs: 3\n", "line 4: duplicate key 'epochs'"),
    (b"name: x\nstage1:\n  search:\n    lr_g: {distribution: loguniform, low: 1.0e-4, high: 1.0e-3, default: 5.0e-4}\n"
     b"    lr_g: {distribution: loguniform, low: 1.0e-5, high: 1.0e-3, default: 5.0e-4}\n",
     "line 5: duplicate key 'lr_g'"),
]
MALFORMED_FIELDS = [  # the smoke sweep with one field made wrong
    ({"search": [1, 2]}, "search: expected a mapping, got list"),
    ({"stage2.search.stage2_init": {"distribution": "categorical", "choices": ["residual", "copy"], "default": "residual"}},
     "stage2.search.stage2_init.choices: 'copy' is not one of scratch, residual"),
    ({"stage1.search.z_dim": {"distribution": "uniform", "low": 16, "high": 64, "default": 32}},
     "stage1.search.z_dim.distribution: z_dim is an integer: use int or categorical, not uniform"),
    ({"stage2.search.attention": {"distribution": "uniform", "low": 0, "high": 1, "default": 0.5}},
     "stage2.search.attention.distribution: attention takes bool values"),
    ({"stage1.search.lr_g": {"distribution": "uniform", "low": -0.1, "high": 0.1, "default": 0.01}},
     "stage1.search.lr_g.low: must be > 0.0, got -0.1"),
    ({"stage2.search.z_dim": 8}, "stage2.search.z_dim: unknown parameter (it is a Stage-I parameter)"),
    ({"data": {"kind": "cub", "uri": "/data/birds", "encoder": "precomputed"}},
     "data.inception_weights: cub is scored by FID and IS"),
    ({"stage1.epochs": "six"}, "stage1.epochs: expected int, got str"),
    ({"stage1.search_epochs": 99}, "stage1.search_epochs: must be between 1 and epochs ("),
    ({"resources.workers": 1.5}, "resources.workers: expected int, got float"),
    ({"train.hard_negatives": True}, "train.hard_negatives: expected float, got a boolean"),
    ({"train.keep_checkpoints": 0}, "train.keep_checkpoints: must be >= 1, got 0"),
    ({"resources.cpus_per_worker": 0}, "resources.cpus_per_worker: must be >= 1, got 0"),
    ({"train.divergence": {"collapse_loss": 0.0}}, "train.divergence.collapse_loss: must be > 0, got 0.0"),
    ({"search.grace_period": 0}, "search.grace_period: must be >= 1, got 0"),
    # GPU sharing: a fraction is for one-worker trials (NCCL refuses two ranks on one device).
    ({"resources": {"workers": 2, "gpus_per_worker": 0.5}},
     "resources.gpus_per_worker: a fraction of a GPU (0.5) is for single-worker trials, got workers: 2"),
    ({"resources": {"workers": 1, "gpus_per_worker": 2.0}},
     "resources.gpus_per_worker: a worker trains on one GPU, got 2.0"),
    ({"train.device": "tpu"}, "train.device: 'tpu' is not one of auto, cpu, cuda"),
    ({"train.device": "cuda"}, "train.device: cuda needs resources.gpus_per_worker > 0"),
    ({"train.compile": "max"}, "train.compile: 'max' is not one of none, default, reduce-overhead"),
    ({"train.divergence": {"check_every": 0}}, "train.divergence.check_every: must be >= 1, got 0"),
    ({"stage1.start_points": [{"lr_g": 5.0}]}, "stage1.start_points[0].lr_g: 5.0 is not in [5e-05, 0.002]"),
    ({"stage2.start_points": [{"z_dim": 8}]}, "stage2.start_points[0].z_dim: not a searched parameter of this stage"),
    ({"stage1.start_points": [[0.1]]}, "stage1.start_points[0]: expected a mapping of searched parameter -> value"),
]


def _assert_one_line(path, message):
    from harness.config import ConfigError, load_sweep

    with pytest.raises(ConfigError) as err:
        load_sweep(str(path))
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text


@pytest.mark.parametrize("content,message", MALFORMED, ids=[m.split(":")[0] for _, m in MALFORMED])
def test_a_malformed_sweep_file_gets_one_line_naming_the_field(tmp_path, content, message):
    path = tmp_path / "sweep.yaml"
    path.write_bytes(content)
    _assert_one_line(path, message)


@pytest.mark.parametrize("override,message", MALFORMED_FIELDS, ids=[m.split(":")[0] for _, m in MALFORMED_FIELDS])
def test_a_wrong_field_gets_one_line_naming_it(tmp_path, override, message):
    _assert_one_line(_sweep_file(tmp_path, **override), message)


def test_a_sweep_with_nothing_to_search_is_refused_before_ray_starts(tmp_path):
    sweep = _sweep_file(tmp_path, **{"stage2.search": {}})
    out = subprocess.run([sys.executable, "harness/tune.py", "--sweep", sweep, "--storage", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().startswith(f"error: {sweep}: stage2.search: no parameters")
    assert not (tmp_path / "r").exists()


def test_a_directory_or_a_missing_path_is_refused_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "harness/tune.py", "--sweep", str(tmp_path), "--storage", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == f"error: {tmp_path}: is a directory, not a sweep file"
    from harness.config import ConfigError, load_sweep

    with pytest.raises(ConfigError, match="no such sweep file"):
        load_sweep(str(tmp_path / "missing.yaml"))
    assert not (tmp_path / "r").exists()


def test_a_missing_dataset_root_is_refused_before_ray_starts(tmp_path):
    sweep = _sweep_file(tmp_path, data={"kind": "cub", "uri": str(tmp_path / "birds"), "encoder": "precomputed",
                                        "inception_weights": str(tmp_path / "inception.pt")},
                        **{"stage2.search.attention": {"distribution": "categorical", "choices": [False], "default": False}})
    ray_tmp = tmp_path / "ray"  # Ray would make its session directory here
    out = subprocess.run([sys.executable, "harness/tune.py", "--sweep", sweep, "--storage", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"error: {sweep}: data.uri: {tmp_path / 'birds'} does not exist"
    assert not ray_tmp.exists(), "Ray started before the input was checked"
    assert not (tmp_path / "r").exists()


def test_a_weights_file_not_in_the_standard_layout_is_refused_before_ray_starts(tmp_path, cub_root):
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "inception.pth")
    sweep = _sweep_file(tmp_path, data={"kind": "cub", "uri": str(cub_root), "encoder": "precomputed",
                                        "inception_weights": str(tmp_path / "inception.pth")},
                        **{"stage2.search.attention": {"distribution": "categorical", "choices": [False], "default": False}})
    ray_tmp = tmp_path / "ray"
    out = subprocess.run([sys.executable, "harness/tune.py", "--sweep", sweep, "--storage", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().startswith(f"error: {sweep}: data.inception_weights: {tmp_path / 'inception.pth'} is not "
                                         "the standard FID Inception's layout"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not ray_tmp.exists(), "Ray started before the input was checked"


def test_missing_inception_weights_and_stage1_checkpoints_are_refused_naming_the_field(tmp_path):
    from harness.config import sweep_from_dict
    from harness.preflight import check_inputs

    (tmp_path / "birds").mkdir()
    data = sweep_from_dict({"data": {"kind": "cub", "uri": str(tmp_path / "birds"), "encoder": "precomputed",
                                     "inception_weights": str(tmp_path / "inception.pt")}}).data
    with pytest.raises(ConfigError, match=r"^data\.inception_weights: .*inception\.pt does not exist$"):
        check_inputs(data)
    (tmp_path / "inception.pt").write_bytes(b"weights")
    with pytest.raises(ConfigError, match=r"^data\.inception_weights: .*inception\.pt is not a weights file torch loads safely"):
        check_inputs(data)
    torch.jit.script(torch.nn.Identity()).save(str(tmp_path / "inception.pt"))  # a TorchScript network is accepted
    check_inputs(data)
    with pytest.raises(ConfigError, match=r"^--stage1-checkpoint: .*epoch-0002 does not exist$"):
        check_inputs(data, str(tmp_path / "epoch-0002"))
    (tmp_path / "epoch-0002").mkdir()  # a killed upload: the directory without its COMMITTED marker
    with pytest.raises(ConfigError, match=r"^--stage1-checkpoint: .*epoch-0002 is not a complete checkpoint"):
        check_inputs(data, str(tmp_path / "epoch-0002"))
    (tmp_path / "epoch-0002" / "COMMITTED").write_bytes(b"")
    check_inputs(data, str(tmp_path / "epoch-0002"))


def test_a_replaced_section_is_validated_again_and_names_the_field():
    """Validation lives in __post_init__, so dataclasses.replace (CLI overrides, nightly) cannot skip it."""
    import dataclasses

    from harness.config import ConfigError, load_sweep
    from harness.config_fields import replaced

    sweep = load_sweep(str(ROOT / "search_spaces" / "smoke.yaml"))
    with pytest.raises(ConfigError, match=r"^batch_size: must be >= 2"):
        dataclasses.replace(sweep.train, batch_size=1)
    with pytest.raises(ConfigError, match=r"^search\.num_samples: must be >= 1, got 0$"):
        replaced(sweep.search, "search", num_samples=0)


def test_sampled_values_become_typed_hyperparameters_and_a_bad_one_is_named():
    import numpy as np

    from harness.errors import ConfigError
    from harness.hyperparams import Stage1Hyperparams, Stage2Hyperparams, from_sampled

    hp = from_sampled(1, {"s1.lr_g": np.float64(1e-3), "s1.z_dim": np.int64(37), "s2.lr_g": 5.0}, prefix="s1.")
    assert hp == Stage1Hyperparams(lr_g=1e-3, z_dim=37) and type(hp.z_dim) is int and type(hp.lr_g) is float
    assert hp.kl_weight == 2.0 and hp.c_dim == 128, "unsampled values keep the paper's"
    assert from_sampled(2, {"attention": np.bool_(True)}).uses_word_features is True
    with pytest.raises(ConfigError, match=r"^lr_d: must be > 0.0, got -1.0$"):
        from_sampled(1, {"lr_d": -1.0})
    with pytest.raises(ConfigError, match=r"^stage2_init: 'copy' is not one of scratch, residual$"):
        Stage2Hyperparams(stage2_init="copy")


def test_start_points_follow_the_defaults_and_take_the_defaults_for_what_they_leave_out(tmp_path):
    from harness.config import load_sweep

    sweep = load_sweep(_sweep_file(tmp_path, **{"stage1.start_points": [{"lr_g": 1e-3, "kl_weight": 0.5}]}))
    defaults = sweep.defaults(1)
    assert sweep.start_points(Phase.STAGE1) == [defaults, {**defaults, "lr_g": 1e-3, "kl_weight": 0.5}]
    assert sweep.first_point(Phase.STAGE1) == defaults  # the paper's values stay the reference point
    # Joint trials pair the i-th point of each stage; a stage with fewer points repeats its last (the defaults).
    joint = sweep.start_points(Phase.JOINT)
    assert [p["s1.lr_g"] for p in joint] == [defaults["lr_g"], 1e-3]
    assert joint[1]["s2.lr_g"] == sweep.defaults(2)["lr_g"]


def test_search_trials_train_search_epochs_and_confirmation_runs_the_full_budget():
    from harness.config import sweep_from_dict

    sweep = sweep_from_dict({"stage1": {"epochs": 16, "search_epochs": 8}, "stage2": {"epochs": 2}})
    assert (sweep.stage1.budget(Source.SEARCH), sweep.stage1.budget(Source.CONFIRM)) == (8, 16)
    assert (sweep.stage2.budget(Source.SEARCH), sweep.stage2.budget(Source.CONFIRM)) == (2, 2)  # unset: the full budget
    assert sweep.screened_stages() == [("Stage-I", 8, 16)]
