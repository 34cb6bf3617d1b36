"""The ranking and the report on a synthetic sweep written straight to storage (no Ray, no training): which
trials rank where, the confirmed ranking, the cost table, the Stage-II parents and the nightly rows."""

from __future__ import annotations

import json

import pytest

from harness import checkpoint, storage
from harness.config import load_sweep
from harness.config_fields import replaced
from harness.errors import HarnessError
from harness.leaderboard import Leaderboard
from harness.objective import Objective
from harness.phase import Phase, Source
from harness.report import build_report, rank_trials
from harness.report.markdown import extra_columns
from harness.report.page import breakable
from harness.report.search_vs_random import search_vs_random, too_few_sentence
from harness.results import config_id, read_parquet
from harness.run_layout import SweepLayout
from harness.sweep import print_leaderboard, top_stage1_checkpoints
from harness.sweep_record import SweepRecord
from tests.conftest import ROOT

SMOKE = load_sweep(str(ROOT / "search_spaces" / "smoke.yaml"))
SWEEP = replaced(SMOKE, "", name="synthetic", search=replaced(SMOKE.search, "search", objective_window=1,
                                                              stage2_parents=2))
D1, D2 = SWEEP.defaults(1), {**SWEEP.defaults(2), "stage1_parent": 0}
OTHER1, OTHER2 = {**D1, "lr_g": 1e-3}, {**D2, "lr_g": 1e-4}


def _trial(layout: SweepLayout, trial_id: str, phase: Phase, params: dict, fids: list[float], *, stage: int,
           source: Source = Source.SEARCH, seed: int = 0, diverged: bool = False, cpu: float = 10.0,
           checkpoints: bool = False) -> None:
    trial = layout.trial(trial_id)
    storage.write_bytes(trial.params, json.dumps({"trial_id": trial_id, "phase": phase, "params": params,
                                                  "source": source, "train_seed": seed,
                                                  "config_id": config_id(params)}).encode())
    run = trial.stage(stage)
    for epoch, fid in enumerate(fids, 1):
        last = epoch == len(fids)
        status = ("diverged" if diverged else "finished") if last else "running"
        metrics = {"status": status, "epoch": epoch, "stage": stage, "fid": fid, "fidelity": 1 / fid,
                   "cpu_seconds": cpu * epoch, "gpu_seconds": 0.0, "wall_seconds": cpu * epoch}
        storage.write_bytes(run.metrics(epoch), json.dumps(metrics).encode())
        if checkpoints and not diverged:
            checkpoint.write(run, epoch, checkpoint.serialize({}), checkpoint.CheckpointMeta(
                stage=stage, metrics=metrics, config={"stage1_checkpoint": None}, architecture={},
                objective_history=fids[:epoch]))


@pytest.fixture
def synthetic(tmp_path):
    """A staged sweep's files: Stage-I search and confirmation, Stage-II search and confirmation."""
    layout = SweepLayout(str(tmp_path), SWEEP.name)
    _trial(layout, "s1-defaults", Phase.STAGE1, D1, [900.0, 700.0], stage=1, checkpoints=True)
    _trial(layout, "s1-other", Phase.STAGE1, OTHER1, [800.0, 600.0], stage=1, checkpoints=True)
    _trial(layout, "s1-diverged", Phase.STAGE1, {**D1, "lr_d": 2e-3}, [1e6], stage=1, diverged=True)
    for seed, (d, o) in enumerate(((650.0, 500.0), (750.0, 560.0)), 1):
        _trial(layout, f"c1-defaults-{seed}", Phase.STAGE1, D1, [900.0, d], stage=1, source=Source.CONFIRM, seed=seed)
        _trial(layout, f"c1-other-{seed}", Phase.STAGE1, OTHER1, [900.0, o], stage=1, source=Source.CONFIRM, seed=seed,
               checkpoints=True)
    _trial(layout, "s2-defaults", Phase.STAGE2, D2, [500.0], stage=2)
    _trial(layout, "s2-other", Phase.STAGE2, OTHER2, [450.0], stage=2, cpu=30.0)
    for seed, (d, o) in enumerate(((480.0, 400.0), (520.0, 420.0)), 1):
        _trial(layout, f"c2-defaults-{seed}", Phase.STAGE2, D2, [d], stage=2, source=Source.CONFIRM, seed=seed)
        _trial(layout, f"c2-other-{seed}", Phase.STAGE2, OTHER2, [o], stage=2, source=Source.CONFIRM, seed=seed,
               checkpoints=True)
    return layout


def test_search_trials_rank_by_their_best_evaluation_with_diverged_ones_last():
    rows = [{"trial_id": t, "stage": 1, "epoch": e, "fid": v, "status": s}
            for t, e, v, s in [("a", 1, 900.0, "running"), ("a", 2, 700.0, "finished"), ("b", 1, 300.0, "diverged"),
                               ("c", 1, 650.0, "running"), ("c", 2, 800.0, "stopped"), ("d", 1, 500.0, "running")]]
    rows.append({"trial_id": "d", "stage": 1, "epoch": 2, "status": "running"})  # an evaluation without the metric
    ranked = rank_trials(rows, 1, SWEEP.objective)
    assert [(e["trial_id"], e["fid"], e["final_status"]) for e in ranked] == [
        ("d", 500.0, "running"), ("c", 650.0, "stopped"), ("a", 700.0, "finished"), ("b", 300.0, "diverged")]
    assert ranked[1]["trial_cost"]["epoch"] == 2  # the cost is the run's last evaluation's
    assert rank_trials(rows, 2, SWEEP.objective) == []


def test_the_report_ranks_the_final_phase_and_confirms_by_mean_over_seeds(synthetic):
    record = SweepRecord.new(SWEEP, seed=7)
    report = build_report(synthetic, SWEEP, record)
    assert report.phase is Phase.STAGE2
    assert [e["trial_id"] for e in report.ranked] == ["s2-other", "s2-defaults"]
    assert [e["trial_id"] for e in report.stage1_ranked] == ["s1-other", "s1-defaults", "s1-diverged"]
    best, defaults = report.confirmed
    assert best.config_id == config_id(OTHER2) and best.values == (400.0, 420.0) and best.summary.mean == 410.0
    assert defaults.is_default and defaults.values == (480.0, 520.0) and best.verdict.outcome in ("better", "within_noise")
    assert 0 < best.summary.low < 410.0 < best.summary.high  # the log-scale interval of a positive metric
    assert [c.values for c in report.stage1_confirmed] == [(500.0, 560.0), (650.0, 750.0)]
    assert {k: v["runs"] for k, v in report.cost.items()} == {"stage1": 3, "stage1-confirm": 4, "stage2": 2,
                                                              "stage2-confirm": 4}
    assert report.cost["stage2"]["cpu_seconds"] == 40.0  # 10 + 30: each run's last evaluation, summed
    assert len(read_parquet(synthetic.results)) == len(report.rows) == 2 + 2 + 1 + 8 + 2 + 4  # an evaluation a row
    md = storage.read_bytes(synthetic.report_file("leaderboard.md")).decode()
    assert "searcher seed 7" in md and "Student-t interval on the log scale" in md
    assert too_few_sentence(2) in md, "2 search trials a stage: too few to compare with random sampling"
    html = storage.read_bytes(synthetic.report_file("leaderboard.html")).decode()
    # The four ranking tables scroll in their own boxes, and their underscored column names may wrap: at 1400 px
    # the demo's confirmed ranking ran past the page's right edge, cutting off its last columns.
    assert html.count('<div class="wide"><table>') == 4
    assert "<th>kl_<wbr>weight</th>" in html and "<th>stage1_<wbr>parent</th>" in html


def test_a_column_name_breaks_after_its_underscores_and_stays_escaped():
    assert str(breakable("z_dim_stage2")) == "z_<wbr>dim_<wbr>stage2"
    assert str(breakable("a<b>_c")) == "a&lt;b&gt;_<wbr>c" and str(breakable("epoch")) == "epoch"


def test_an_interrupted_staged_sweep_reports_its_stage1_phase(tmp_path):
    layout = SweepLayout(str(tmp_path), SWEEP.name)
    _trial(layout, "s1-defaults", Phase.STAGE1, D1, [900.0, 700.0], stage=1)
    report = build_report(layout, SWEEP, None)
    assert report.phase is Phase.STAGE1 and [e["trial_id"] for e in report.ranked] == ["s1-defaults"]
    assert report.stage1_ranked == [] and report.confirmed == []


def test_stage2_parents_are_the_confirmed_configs_best_seed_checkpoints_then_the_search_ranking(synthetic):
    parents = top_stage1_checkpoints(synthetic, SWEEP)
    # The confirmed winner (OTHER1: mean 530) by its best seed run's best checkpoint; then the next config by the
    # search ranking (the defaults' search trial: the defaults' confirmation runs kept no checkpoints).
    assert parents == [synthetic.trial("c1-other-1").stage(1).checkpoint(2),
                       synthetic.trial("s1-defaults").stage(1).checkpoint(2)]


def test_a_night_records_its_best_confirmed_config_and_promotes_it(synthetic, tmp_path):
    report = build_report(synthetic, SWEEP, SweepRecord.new(SWEEP, seed=7))
    board = Leaderboard(str(tmp_path / "board"), SWEEP.name, SWEEP.objective, extra_columns(SWEEP))
    outcome = board.record_night("2026-12-01", report, synthetic, 3600.0, 7, 0.1, ["stage2"])
    night = board.nights()[-1]
    assert (night["best_value"], night["best_seeds"], night["best_trial"]) == (410.0, 2, "c2-other-1")
    assert night["best_ci_low"] < 410.0 < night["best_ci_high"] and night["ended_by"] == "time budget (stage2)"
    assert outcome.promoted and not outcome.regression and outcome.all_time_best == 410.0
    trials = read_parquet(str(tmp_path / "board" / "leaderboard" / "trials.parquet"))
    assert [t["trial_id"] for t in trials] == ["s2-other", "s2-defaults", "s1-other", "s1-defaults", "s1-diverged"]
    assert trials[0]["fidelity"] == pytest.approx(1 / 450.0) and trials[0]["quality"] == pytest.approx(1 / 450.0)


def test_a_board_refuses_nights_ranked_by_another_objective(synthetic, tmp_path):
    report = build_report(synthetic, SWEEP, SweepRecord.new(SWEEP, seed=7))
    root = str(tmp_path / "board")
    Leaderboard(root, SWEEP.name, SWEEP.objective, extra_columns(SWEEP)).record_night(
        "2026-12-01", report, synthetic, 3600.0, 7, 0.1)
    windowed = Leaderboard(root, SWEEP.name, Objective("fid", 3))
    with pytest.raises(HarnessError, match=r"night 2026-12-01 ranked by 'fid', this sweep by 'fid_last3_mean'"):
        windowed.nights()
    with pytest.raises(HarnessError, match=r"holds the nightly sweep 'synthetic', not 'other'"):
        Leaderboard(root, "other", SWEEP.objective).nights()


def test_the_terminal_leaderboard_lists_the_confirmed_configs_then_the_search_trials(synthetic, capsys):
    record = SweepRecord.new(SWEEP, seed=7)
    record.wall_seconds = 12.5
    print_leaderboard(build_report(synthetic, SWEEP, record), SWEEP, record)
    out = capsys.readouterr().out
    assert "=== Leaderboard: synthetic (staged, fid, min) ===" in out and "wall time: 12.5 s" in out
    first = out.splitlines()[out.splitlines().index("confirmed configs, ranked by mean fid over seeds (95 % interval):") + 1]
    assert first.startswith(f" 1. {config_id(OTHER2)}  fid=410 [")
    assert " 1. s2-other  fid=450 fidelity=0.002222  [finished, epoch 1]" in out


def _ended(values: list[float], epochs: list[int], metric: str = "fid") -> tuple[list[dict], list[dict]]:
    """Search trials t0, t1, ... launched in that order, as rank_trials hands them over, and their rows."""
    ranked = [{"trial_id": f"t{i}", metric: v, "final_status": "finished"} for i, v in enumerate(values)]
    rows = [{"trial_id": f"t{i}", "stage": 1, "epoch": e, "started_at": 1000.0 + i} for i, e in enumerate(epochs)]
    return ranked, rows


def test_search_against_random_orders_of_its_own_trials_by_hand():
    # 5 trials of 2 epochs; the search launched the best (100) first. A random order puts it first with
    # probability 1/5, so 20 % of orders reach it within the search's 2 trial-epochs; its position is uniform
    # over 1..5, so the median order needs 3 trials, 6 trial-epochs. Half the trials is 2: two of the five at
    # random include one of the best two (100, 200) with probability 1 - C(3,2)/C(5,2) = 0.7 and the best with
    # 0.4, so the median best of 2 is 200.
    ranked, rows = _ended([100.0, 500.0, 400.0, 300.0, 200.0], [2] * 5)
    vs = search_vs_random(ranked, rows, Objective("fid"))
    assert (vs.trials, vs.trial_epochs, vs.best, vs.best_after_trials, vs.best_after_epochs) == (5, 10, 100.0, 1, 2)
    assert vs.share_random_as_soon == pytest.approx(0.2, abs=0.03) and vs.random_epochs_to_best == 6
    assert (vs.half, vs.search_best_at_half, vs.random_best_at_half) == (2, 100.0, 200.0)
    assert vs.random_best_at_half_iqr == (100.0, 300.0)
    # With 5 trials the best comes first in 1 order of 5: no order can be beyond chance, and the sentence says so.
    assert not vs.can_show_beyond_chance and "with 5 trials no order can show more than chance" in vs.sentence(
        Objective("fid"))


def test_search_against_random_with_a_metric_to_maximise_uneven_budgets_and_two_stages():
    # The best (0.9) came last. Trial t1 trained 3 Stage-I and 2 Stage-II epochs (a joint trial): 5 trial-epochs,
    # so the best is reached after 1 + 5 + 1 + 3 = 10, and every random order reaches it as soon.
    ranked, rows = _ended([0.1, 0.5, 0.2, 0.9], [1, 3, 1, 3], metric="conditioning")
    rows.append({"trial_id": "t1", "stage": 2, "epoch": 2, "started_at": 1020.0})
    rows.insert(0, {"trial_id": "t0", "stage": 1, "epoch": 1, "started_at": 1010.0})  # t0 resumed: its first start
    vs = search_vs_random(ranked, rows, Objective("conditioning"))
    assert (vs.best, vs.best_after_trials, vs.best_after_epochs, vs.share_random_as_soon) == (0.9, 4, 10, 1.0)
    assert vs.search_best_at_half == 0.5 and vs.random_best_at_half_iqr[0] <= vs.random_best_at_half <= 0.9
    # A diverged trial is never the best, whatever it read before it diverged.
    ranked[3]["final_status"] = "diverged"
    vs = search_vs_random(ranked, rows, Objective("conditioning"))
    assert (vs.best, vs.best_after_trials, vs.trial_epochs) == (0.5, 2, 10)
    # Fewer than 4 trials say nothing.
    assert search_vs_random(ranked[:3], rows, Objective("conditioning")) is None
    assert too_few_sentence(3) == ("3 search trials with a value: too few to compare the search with random sampling "
                                   "(4 needed).")


def test_twenty_trials_are_the_fewest_that_can_show_an_order_beyond_chance():
    ranked, rows = _ended([100.0] + [500.0 + i for i in range(19)], [1] * 20)
    vs = search_vs_random(ranked, rows, Objective("fid"))
    assert vs.can_show_beyond_chance and vs.share_random_as_soon == pytest.approx(0.05, abs=0.015)
    assert vs.random_epochs_to_best in (10, 10.5, 11)  # the best's position is uniform over 1..20
    ranked, rows = _ended([100.0] + [500.0 + i for i in range(18)], [1] * 19)
    assert not search_vs_random(ranked, rows, Objective("fid")).can_show_beyond_chance
