"""Tracking: what a sweep leaves for optuna-dashboard, TensorBoard and MLflow, each read back with the
tool's own reader, and the HTML report parsed as a browser would."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import optuna
import pytest
from PIL import Image

from harness import storage
from harness.config import load_sweep
from harness.objective import Objective
from harness.report.plots import pareto_front
from harness.results import read_parquet
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # they read the session's smoke sweep
SMOKE = load_sweep(str(ROOT / "search_spaces" / "smoke.yaml"))


def _runs(smoke_sweep) -> dict[tuple[str, int], int]:
    """(trial id, stage) -> evaluations, from results.parquet."""
    out: dict[tuple[str, int], int] = {}
    for r in read_parquet(f"{smoke_sweep.sweep}/results.parquet"):
        out[(r["trial_id"], r["stage"])] = out.get((r["trial_id"], r["stage"]), 0) + 1
    return out


def test_the_sweeps_optuna_journal_opens_in_optuna_dashboard(smoke_sweep, tmp_path):
    from optuna_dashboard._storage_url import get_storage  # what `optuna-dashboard <file>` calls

    journal = tmp_path / "optuna.journal"  # an S3 sweep's journal is copied down to open it
    journal.write_bytes(storage.read_bytes(f"{smoke_sweep.sweep}/optuna.journal"))
    studies = {s.study_name: s for s in optuna.study.get_all_study_summaries(get_storage(str(journal)))}
    assert set(studies) == {"smoke-stage1", "smoke-stage2"}
    rows = read_parquet(f"{smoke_sweep.sweep}/results.parquet")
    for phase in ("stage1", "stage2"):
        trials = optuna.load_study(study_name=f"smoke-{phase}", storage=get_storage(str(journal))).trials
        searched = {r["trial_id"] for r in rows if r["phase"] == phase and r["source"] == "search"}
        assert len(trials) == len(searched) == 2
        assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
        defaults = SMOKE.defaults(1 if phase == "stage1" else 2)
        assert {k: trials[0].params[k] for k in defaults} == defaults, "the sweep's defaults are the study's first trial"


def test_every_run_has_tensorboard_events_with_scalars_hparams_and_the_sample_grid(smoke_sweep, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = _runs(smoke_sweep)
    assert len(runs) == 12  # 2 + 2 search trials and 4 + 4 confirmation runs, one stage each (staged)
    for (trial_id, stage), evaluations in runs.items():
        prefix = f"{smoke_sweep.sweep}/trials/{trial_id}/stage{stage}/tensorboard"
        local = tmp_path / trial_id / f"stage{stage}"
        local.mkdir(parents=True)
        for uri in storage.list_files(prefix):
            (local / uri.rsplit("/", 1)[1]).write_bytes(storage.read_bytes(uri))
        events = EventAccumulator(str(local), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        tags = events.Tags()
        for tag in ("eval/fid", "eval/fidelity", "eval/fidelity_colour", "train/d_loss", "train/g_loss", "train/kl",
                    "lr/generator", "lr/discriminator"):
            assert tag in tags["scalars"], (trial_id, stage, tag)
        assert [e.step for e in events.Scalars("eval/fid")] == list(range(1, evaluations + 1))
        assert len(events.Images("samples")) == evaluations, "one sample grid per evaluation"
        assert "_hparams_/session_start_info" in events.summary_metadata, "hyperparameters for the HParams view"


def test_mlflow_holds_the_sweep_as_a_parent_run_and_every_trial_as_a_child(smoke_sweep):
    from mlflow.tracking import MlflowClient

    from harness.mlflow_log import SWEEP_TAG

    client = MlflowClient(tracking_uri=smoke_sweep.mlflow_uri)
    experiment = client.get_experiment_by_name("smoke")
    parents = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{smoke_sweep.sweep}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert {a.path for a in client.list_artifacts(parent, "report")} == {"report/leaderboard.html", "report/leaderboard.md"}
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    runs = _runs(smoke_sweep)
    assert len(children) == len({trial_id for trial_id, _ in runs}) == 12
    for child in children:
        trial_id = child.data.tags["trial_name"].removeprefix("stage_trial_")
        final = max(stage for t, stage in runs if t == trial_id)
        assert set(SMOKE.defaults(final)) <= set(child.data.params), "hyperparameters, confirmation runs too"
        history = client.get_metric_history(child.info.run_id, "fid")
        assert len(history) == runs[(trial_id, final)], "fid at every evaluation"
        grids = [a.path for a in client.list_artifacts(child.info.run_id, f"stage{final}")]
        assert len(grids) == 1 and grids[0].endswith(".png"), "the final sample grid"


def test_the_html_report_parses_and_every_embedded_image_decodes(smoke_sweep):
    import html5lib

    page = storage.read_bytes(f"{smoke_sweep.sweep}/report/leaderboard.html").decode()
    document = html5lib.parse(page, namespaceHTMLElements=False)
    images = document.findall(".//img")
    assert len(images) >= 6  # generated, real, confirmed, curves, quality against compute, the next best
    for img in images:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,"), "self-contained: no file next to it is needed"
        decoded = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        decoded.load()
        assert decoded.size[0] > 50 and img.get("alt")
    headings = [h.text for h in document.findall(".//h2")]
    for heading in ("What the best run draws", "Confirmed ranking", "Curves", "Quality against compute",
                    "Search trials", "Parameter importances", "Cost"):
        assert heading in headings, heading
    fidelity = document.findall(".//table")[0]
    cells = [[c.text for c in row] for row in fidelity.findall(".//tr")]
    assert cells[0] == ["attribute", "this run", "its Stage-I parent", "chance"]
    assert [row[0] for row in cells[1:]] == ["shape", "colour", "size", "position", "background"]


def test_the_pareto_front_keeps_only_runs_nothing_beats_on_cost_and_quality():
    points = [(1.0, 50.0), (2.0, 40.0), (2.5, 45.0), (3.0, 30.0), (0.5, 60.0), (3.0, 35.0)]
    assert pareto_front(points, Objective("fid")) == [(0.5, 60.0), (1.0, 50.0), (2.0, 40.0), (3.0, 30.0)]
    assert pareto_front(points, Objective("fidelity")) == [(0.5, 60.0)]


def test_building_a_dataset_draws_no_progress_bar_into_a_log(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness.data", "build", "shapes", "--out", str(tmp_path / "d"), "--n", "40",
                          "--resolutions", "32", "--encoders", "hash", "--shards", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "rendering scenes" not in out.stderr and "\r" not in out.stderr, "tqdm draws only on a terminal"
    assert json.loads(out.stdout.strip().splitlines()[-1])["n"] == 40
