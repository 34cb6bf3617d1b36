"""Sweeps end to end: smoke sweep on the S3 endpoint, joint strategy, bad sweep files, resume, report."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from html import unescape

import psutil
import pytest

from harness import storage
from harness import tune as tune_cmd
from harness.results import read_parquet
from tests.conftest import ROOT, communicate_or_fail, write_sweep

SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def _sweep_file(tmp_path: pathlib.Path, **overrides) -> str:
    return write_sweep(SMOKE, tmp_path / "sweep.yaml", **overrides)


def _assert_secret_appears_nowhere(secret: str, s3, ray_temp: pathlib.Path, console: str) -> None:
    """The sweep ran with this secret key in its environment: no object, log or output may hold it."""
    import boto3

    assert len(secret) >= 16 and secret not in console
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket)
            for o in page.get("Contents", [])]
    assert any(k.endswith("results.parquet") for k in keys)
    for key in keys:
        assert secret.encode() not in client.get_object(Bucket=s3.bucket, Key=key)["Body"].read(), key
    scanned = 0
    for path in pathlib.Path(ray_temp).rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000:
            scanned += 1
            assert secret.encode() not in path.read_bytes(), path
    assert scanned > 0, "no Ray log files were scanned"


@pytest.mark.slow
def test_smoke_sweep_on_s3_ends_in_a_ranked_report(smoke_sweep, s3):
    root, out = smoke_sweep.root, smoke_sweep.out
    assert "=== Leaderboard: smoke" in out and "report: s3://" in out
    _assert_secret_appears_nowhere(os.environ["AWS_SECRET_ACCESS_KEY"], s3, smoke_sweep.ray_temp, out + smoke_sweep.err)

    rows = read_parquet(f"{root}/smoke/results.parquet")
    phases = {r["phase"] for r in rows}
    assert phases == {"stage1", "stage2"}
    search = [r for r in rows if r["source"] == "search"]
    stage1_trials = {r["trial_id"] for r in search if r["phase"] == "stage1"}
    stage2_trials = {r["trial_id"] for r in search if r["phase"] == "stage2"}
    assert len(stage1_trials) == 2 and len(stage2_trials) == 2
    for r in rows:  # one row per trial and evaluation, with metrics, config, cost and where it came from
        for key in ("trial_id", "stage", "status", "epoch", "fid", "fidelity", "wall_seconds", "cpu_seconds",
                    "gpu_seconds", "sweep.model.profile", "param.kl_weight", "param.lr_g", "source", "train_seed",
                    "config_id"):
            assert key in r, key
    assert {r["train_seed"] for r in search} == {0}
    # Confirmation runs: the best search config and the paper defaults, each with the same 2 fresh
    # seeds, every run at the phase's full budget (the defaults too: an equal budget).
    from harness.results import config_id

    for phase, planned in (("stage1", 2), ("stage2", 1)):
        confirm = [r for r in rows if r["source"] == "confirm" and r["phase"] == phase]
        seeds: dict[str, set] = {}
        for r in confirm:
            seeds.setdefault(r["config_id"], set()).add(r["train_seed"])
        assert len(seeds) == 2 and all(s == {1, 2} for s in seeds.values()), seeds
        record = json.loads(storage.read_bytes(f"{root}/smoke/sweep.json"))
        defaults = config_id(record["confirm_candidates"][phase][0])
        assert defaults in seeds
        last = {}
        for r in confirm:
            if r["trial_id"] not in last or r["epoch"] > last[r["trial_id"]]["epoch"]:
                last[r["trial_id"]] = r
        assert len(last) == 4 and all(r["epoch"] == planned and r["status"] == "finished" for r in last.values())
    # The paper defaults are the first point evaluated in each phase.
    record = json.loads(storage.read_bytes(f"{root}/smoke/sweep.json"))
    defaults = [r for r in search if r["phase"] == "stage1" and r["param.kl_weight"] == 2.0 and r["param.lr_g"] == 2e-4
                and r["param.lr_d"] == 2e-4 and r["param.z_dim"] == 8]
    assert defaults, "the paper's values were evaluated"
    # Stage-II trials start from the top-k Stage-I checkpoints, never retraining Stage-I.
    assert all(r["stage"] == 2 for r in rows if r["phase"] == "stage2")
    assert len(record["stage1_parents"]) == 2

    from harness.report import build_report
    from harness.run_layout import SweepLayout
    from harness.sweep_record import SweepRecord

    swept = SweepRecord.load(f"{root}/smoke/sweep.json")
    report = build_report(SweepLayout(root, "smoke"), swept.sweep, swept)  # the typed report of what ran
    key = swept.sweep.objective.key
    ranked = [e["trial_id"] for e in report.ranked]
    assert set(ranked) == stage2_trials
    best = {t: min(r[key] for r in rows if r["trial_id"] == t and r["stage"] == 2) for t in ranked}
    assert [best[t] for t in ranked] == sorted(best.values()), "ranked by the objective"
    assert [c.summary.mean for c in report.confirmed] == sorted(c.summary.mean for c in report.confirmed)
    assert len(report.confirmed) == 2 and sum(c.is_default for c in report.confirmed) == 1
    md = storage.read_bytes(f"{root}/smoke/report/leaderboard.md").decode()
    html = storage.read_bytes(f"{root}/smoke/report/leaderboard.html").decode()
    assert html.count("data:image/png;base64,") >= 4, "curves, confirmed intervals and the best sample grids are inlined"
    assert "Parameter importances" in html and "Cost" in html and "`" not in html, "HTML, not Markdown"
    assert "Paper defaults" in md
    # The confirmed ranking's words: intervals, the named test and one verdict sentence per non-default config.
    for text in (md, unescape(html)):
        assert "95 % interval" in text and "one-sided Welch's t-test" in text
        assert any(v in text for v in ("Beats the paper defaults beyond seed noise",
                                        "Not distinguishable from the paper defaults",
                                        "Worse than the paper defaults beyond seed noise"))
    assert "Not computed: " in md, "importances from 2 trials are noise, and the report says so"
    assert storage.exists(f"{root}/smoke/report/images/curves.png")


@pytest.mark.slow
def test_the_windowed_objective_is_one_value_for_the_searcher_the_confirmation_ranking_and_the_report(smoke_sweep,
                                                                                                     tmp_path):
    import optuna

    from harness.report import build_report
    from harness.results import last_by_run, params_of
    from harness.run_layout import SweepLayout
    from harness.sweep_record import SweepRecord

    record = SweepRecord.load(f"{smoke_sweep.sweep}/sweep.json")
    objective = record.sweep.objective
    assert objective.key == "fid_last2_mean"
    rows = read_parquet(f"{smoke_sweep.sweep}/results.parquet")
    by_run: dict = {}
    for r in sorted(rows, key=lambda r: r["epoch"]):
        by_run.setdefault((r["trial_id"], r["stage"]), []).append(r)
    for evaluations in by_run.values():  # the worker's value: the mean of the run's last 2 evaluations of fid
        fids = [r["fid"] for r in evaluations]
        assert [r[objective.key] for r in evaluations] == pytest.approx(
            [sum(fids[max(0, i - 1): i + 1]) / len(fids[max(0, i - 1): i + 1]) for i in range(len(fids))])
    last = last_by_run(rows)
    # The searcher: each COMPLETE Stage-I trial's value in the Optuna study is its run's last windowed value.
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(storage.read_bytes(f"{smoke_sweep.sweep}/optuna.journal"))
    study = optuna.load_study(study_name="smoke-stage1", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    # Parquet fills a Stage-I row's Stage-II-only param columns with None: not among its searched values.
    search_last = {tuple(sorted((k, v) for k, v in params_of(r).items() if v is not None)): r[objective.key]
                   for (tid, stage), r in last.items() if r["phase"] == "stage1" and r["source"] == "search"}
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert told and all(t.value == pytest.approx(search_last[tuple(sorted(t.params.items()))]) for t in told)
    # The confirmation ranking and the report read the same value.
    report = build_report(SweepLayout(smoke_sweep.root, "smoke"), record.sweep, record)
    for c in report.confirmed + report.stage1_confirmed:
        stage = 2 if c in report.confirmed else 1
        assert list(c.values) == pytest.approx([last[(t, stage)][objective.key] for t in c.trial_ids])
    assert [e[objective.key] for e in report.ranked] == sorted(e[objective.key] for e in report.ranked)
    md = storage.read_bytes(f"{smoke_sweep.sweep}/report/leaderboard.md").decode()
    assert "fid, mean of the last 2 evaluations" in md and "log scale" in md


@pytest.mark.slow
def test_joint_strategy_trains_both_stages_per_trial_and_report_regenerates(ray_local, tmp_path, capsys):
    """Also the screening budget: search trials train stage1.search_epochs, confirmation runs stage1.epochs."""
    root = str(tmp_path / "runs")
    sweep = _sweep_file(tmp_path, **{"stage1.search_epochs": 1})  # smoke.yaml's Stage-I epochs: 2
    assert tune_cmd.main(["--sweep", sweep, "--storage", root, "--strategy", "joint", "--name", "smoke-joint"]) == 0
    capsys.readouterr()
    rows = read_parquet(f"{root}/smoke-joint/results.parquet")
    last: dict = {}
    for r in rows:
        if r["stage"] == 1:
            last[r["trial_id"]] = max(last.get(r["trial_id"], r), r, key=lambda x: x["epoch"])
    assert {(r["source"], r["epoch"], r["status"]) for r in last.values()} == {("search", 1, "finished"),
                                                                              ("confirm", 2, "finished")}
    md = (tmp_path / "runs" / "smoke-joint" / "report" / "leaderboard.md").read_text()
    assert "Stage-I search trials train 1 of the confirmation runs' 2 epochs." in md
    assert {r["phase"] for r in rows} == {"joint"}
    by_trial: dict[str, set] = {}
    for r in rows:
        if r["source"] == "search":
            by_trial.setdefault(r["trial_id"], set()).add(r["stage"])
    assert len(by_trial) == 2
    assert any(stages == {1, 2} for stages in by_trial.values())
    # Joint confirmation runs train both stages too, with the confirmation seeds.
    confirm = [r for r in rows if r["source"] == "confirm"]
    assert {r["train_seed"] for r in confirm} == {1, 2} and {r["stage"] for r in confirm} == {1, 2}
    assert all("param.s1.kl_weight" in r and "param.s2.kl_weight" in r for r in rows)
    # The report regenerates from storage alone.
    (tmp_path / "runs" / "smoke-joint" / "report" / "leaderboard.md").unlink()
    out = subprocess.run([sys.executable, "-m", "harness.report", "--storage", root, "--sweep", "smoke-joint"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] == len(rows)
    assert (tmp_path / "runs" / "smoke-joint" / "report" / "leaderboard.md").exists()


@pytest.mark.slow
def test_a_gpu_fraction_no_node_offers_is_rejected(ray_local, tmp_path, capsys):
    sweep = _sweep_file(tmp_path, **{"resources.gpus_per_worker": 0.5})
    assert tune_cmd.main(["--sweep", sweep, "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "resources.gpus_per_worker: 0.5 GPU per worker, but no node offers more than 0" in err


def _metric_files(s3, prefix: str, kinds: dict) -> dict[str, tuple[str, str, object]]:
    """Key -> (phase, source, LastModified) of every metrics file under ``prefix`` on the S3 endpoint; ``kinds``
    caches each trial's (phase, source) from its params.json."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if "/metrics/epoch-" not in o["Key"]:
                continue
            trial_dir = o["Key"].split("/stage")[0]
            if trial_dir not in kinds:
                info = json.loads(client.get_object(Bucket=s3.bucket, Key=f"{trial_dir}/params.json")["Body"].read())
                kinds[trial_dir] = (info["phase"], info["source"])
            out[o["Key"]] = (*kinds[trial_dir], o["LastModified"])
    return out


def _finished_runs(files: dict) -> set[str]:
    """The trial/stage directories among ``files`` (_metric_files) whose runs trained the smoke sweep's whole
    budget: Stage-I 2 epochs, Stage-II 1."""
    last = {"stage1": "epoch-0002.json", "stage2": "epoch-0001.json"}
    return {k.rsplit("/metrics/", 1)[0] for k, (phase, _, _) in files.items() if k.endswith(last[phase])}


KILLS = [("stage1", "search", "epoch-0002.json"), ("stage1", "confirm", ".json"), ("stage2", "search", ".json"),
         ("stage2", "confirm", ".json")]  # (phase, source, metrics file name ending): kill once one is written


@pytest.mark.slow
def test_a_sweep_whose_driver_is_killed_resumes_to_its_planned_trials_on_s3(s3, tmp_path):
    # The driver (and the local Ray it started) is SIGKILLed in each Tune run of the sweep in turn: once a Stage-I search
    # trial has finished, then in Stage-I's confirmation, Stage-II's search and Stage-II's confirmation, and the sweep
    # is run again with --resume after each. It must end with every planned trial of every Tune run done, no finished
    # trial trained again, and say so. No early stopping: every trial Tune knows ends "finished"; one the killed driver
    # started before Tune saved it ends "interrupted" (and is replaced). 83 s on an idle 2-core Intel Xeon VM, 275 s
    # there with two busy loops beside it, 204 s on an idle 2-core AMD EPYC one.
    sweep = _sweep_file(tmp_path, **{"search.max_concurrent": 1, "search.scheduler": "none", "name": "resume"})
    root = f"s3://{s3.bucket}/resume-test"
    prefix = "resume-test/resume/trials/"
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "harness/tune.py", "--sweep", sweep, "--storage", root]
    kinds: dict = {}
    finished: dict[str, object] = {}  # key -> LastModified of the metrics files of runs finished before a kill
    try:
        for i, (phase, source, suffix) in enumerate(KILLS):
            log = open(tmp_path / f"run-{i}.log", "w")  # kept for a failure's post-mortem
            proc = subprocess.Popen(cmd + (["--resume"] if i else []), cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            try:
                deadline, hit = time.time() + 300, []
                while time.time() < deadline and not hit and proc.poll() is None:
                    files = _metric_files(s3, prefix, kinds)
                    hit = [k for k, (p, src, _) in files.items() if (p, src) == (phase, source) and k.endswith(suffix)]
                    time.sleep(0.5)
                assert hit, f"kill {i + 1}: no {phase} {source} evaluation in time (driver exit {proc.poll()})"
            finally:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started die together
                proc.wait()
            files = _metric_files(s3, prefix, kinds)
            done = _finished_runs(files)
            finished.update({k: v[2] for k, v in files.items() if k.rsplit("/metrics/", 1)[0] in done})
        last = subprocess.Popen(cmd + ["--resume"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        stdout, stderr = communicate_or_fail(last, 600, "the last resume")  # a hang ends its local Ray with it
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert last.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "stage2-confirm" in stdout  # the last resume ran (or restarted) Stage-II's confirmation
    after = _metric_files(s3, prefix, kinds)
    for key, modified in finished.items():
        assert after[key][2] == modified, f"finished run trained again: {key}"

    from harness.sweep_record import SweepRecord
    from harness.trial_ends import Ending, sweep_run_ends

    record = SweepRecord.load(f"{root}/resume/sweep.json")
    rows = read_parquet(f"{root}/resume/results.parquet")
    ends = {(str(e.phase), str(e.source)): e for e in sweep_run_ends(record.sweep, record, rows)}
    assert sorted(ends) == [("stage1", "confirm"), ("stage1", "search"), ("stage2", "confirm"), ("stage2", "search")]
    for (_phase, source), e in ends.items():
        planned = 2 if source == "search" else 4
        assert e.planned == planned and e.counts.get(Ending.FINISHED) == planned, e
        assert set(e.counts) <= {Ending.FINISHED, Ending.INTERRUPTED}, e
    line = "Stage-II confirmation: 4 of 4 planned confirmation runs done (4 finished)"
    assert line in stdout
    assert f"- {line}" in storage.read_bytes(f"{root}/resume/report/leaderboard.md").decode()


def _kill_first_train_worker_after_checkpoint(runs: pathlib.Path, killed: list, stop: threading.Event) -> None:
    """Kills one Ray Train worker process (a descendant of this test's Ray) once a checkpoint exists."""
    while not stop.is_set():
        if list(runs.glob("*/trials/*/stage1/checkpoints/epoch-0001/COMMITTED")):
            for p in psutil.Process().children(recursive=True):
                try:
                    if "RayTrainWorker" in " ".join(p.cmdline()) or "RayTrainWorker" in p.name():
                        killed.append(time.time())
                        p.kill()
                        return
                except psutil.NoSuchProcess:
                    continue
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_training_worker_resumes_its_trial_from_the_last_checkpoint(ray_local, tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep = _sweep_file(tmp_path, **{"resources.workers": 1, "stage1.epochs": 6, "search.num_samples": 1,
                                     "search.confirm": {"top_k": 1, "seeds": 0},
                                     "search.grace_period": 6, "name": "killed", "search.stage2_parents": 1})
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_train_worker_after_checkpoint, args=(runs, killed, stop), daemon=True)
    killer.start()
    try:
        assert tune_cmd.main(["--sweep", sweep, "--storage", str(runs)]) == 0
    finally:
        stop.set()
    capsys.readouterr()
    assert killed, "no Ray Train worker was found to kill"
    rows = [r for r in read_parquet(str(runs / "killed" / "results.parquet")) if r["phase"] == "stage1"]
    assert sorted(r["epoch"] for r in rows) == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["status"] == "finished" or max(rows, key=lambda r: r["epoch"])["status"] == "finished"
    first = next(runs.glob("killed/trials/*/stage1/metrics/epoch-0001.json"))
    assert first.stat().st_mtime < killed[0], "epoch 1 was not retrained after the restart"


@pytest.mark.slow
def test_a_cub_layout_sweep_trains_both_stages_and_reports_the_papers_protocol(ray_local, tmp_path, capsys,
                                                                                standard_inception_weights):
    from tests import cub_fixture

    birds = cub_fixture.make(tmp_path / "birds", kind="cub", per_split={"train": 24, "test": 8})
    sweep = _sweep_file(tmp_path, data={"kind": "cub", "uri": str(birds), "encoder": "precomputed",
                                        "inception_weights": str(standard_inception_weights), "eval_samples": 8,
                                        "final_eval_samples": 12},
                        **{"stage2.search.attention": {"distribution": "categorical", "choices": [False], "default": False},
                           "search.num_samples": 2, "search.confirm": {"top_k": 1, "seeds": 2}})
    runs = tmp_path / "runs"
    assert tune_cmd.main(["--sweep", sweep, "--storage", str(runs), "--name", "birds"]) == 0, capsys.readouterr().err
    rows = read_parquet(str(runs / "birds" / "results.parquet"))
    for stage in (1, 2):
        finished = [r for r in rows if r["stage"] == stage and r["status"] == "finished"]
        assert finished and all(r["fid"] > 0 and r["inception_score"] >= 1.0 for r in finished), stage
    # The final evaluation scored every final-stage confirmation run (each confirmed config, both seeds) once.
    final = json.loads((runs / "birds" / "final_eval.json").read_text())
    confirm_trials = {r["trial_id"] for r in rows if r["phase"] == "stage2" and r["source"] == "confirm"}
    assert {s["trial_id"] for s in final["scores"]} == confirm_trials and len(confirm_trials) in (2, 4)
    assert final["samples"] == 12 and final["real_images"] == 8 and final["standard_network"]
    for s in final["scores"]:
        assert s["fid"] > 1e-3 and s["kid_std"] >= 0 and s["inception_score"] >= 1.0 and s["checkpoint"].endswith("epoch-0001")
    report = (runs / "birds" / "report" / "leaderboard.md").read_text()
    section = report[report.index("## Final evaluation (the papers' protocol)"):]
    assert "12 images per run from the test captions" in section and "the standard FID Inception" in section
    assert "IS over 10 splits with the FID Inception's ImageNet logits (not the papers' fine-tuned classifier)" in section
    assert "Not comparable with the published figures: 12 samples" in section
    assert "| published: StackGAN, CUB" in section and "| 51.89 |" in section and "| 3.7 ± 0.04 |" in section
    page = (runs / "birds" / "report" / "leaderboard.html").read_text()
    assert "Final evaluation (the papers' protocol)" in page and "51.89" in page
    # The per-epoch tables show the objective (smoke.yaml's windowed FID), then both Inception metrics beside it.
    assert "| epoch | fid_last2_mean | fid | inception_score |" in report, report[:3000]

