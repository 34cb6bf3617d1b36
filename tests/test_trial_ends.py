"""trial_ends.py: each trial's ending, and the line that says a Tune run's trials against its plan."""

from __future__ import annotations

import types

from harness.phase import Phase, Source
from harness.trial_ends import Ending, TuneRunOutcome, ending, run_ends


def _row(trial_id: str, epoch: int, status: str, phase: Phase = Phase.STAGE1, source: Source = Source.SEARCH,
         stage: int = 1) -> dict:
    return {"trial_id": trial_id, "epoch": epoch, "status": status, "phase": phase, "source": source, "stage": stage}


def test_an_ending_is_read_from_the_last_evaluation_and_what_tune_knew():
    outcome = TuneRunOutcome(known=("a", "b", "c", "d"), failed=("d",))
    assert ending(_row("a", 2, "finished"), Phase.STAGE1, outcome) is Ending.FINISHED
    assert ending(_row("b", 1, "stopped"), Phase.STAGE1, outcome) is Ending.STOPPED
    assert ending(_row("c", 1, "diverged"), Phase.STAGE1, outcome) is Ending.DIVERGED
    assert ending(_row("d", 1, "stopped"), Phase.STAGE1, outcome) is Ending.FAILED
    assert ending(_row("z", 1, "stopped"), Phase.STAGE1, outcome) is Ending.INTERRUPTED  # Tune never knew it
    assert ending(_row("z", 1, "stopped"), Phase.STAGE1, None) is Ending.STOPPED  # no outcome recorded: cannot tell
    # A joint trial whose last evaluation is Stage-I's last epoch was stopped before Stage-II: not finished.
    assert ending(_row("a", 2, "finished", phase=Phase.JOINT), Phase.JOINT, None) is Ending.STOPPED
    assert ending(_row("a", 1, "finished", phase=Phase.JOINT, stage=2), Phase.JOINT, None) is Ending.FINISHED


def test_the_outcome_is_read_from_a_result_grid():
    grid = [types.SimpleNamespace(metrics={"trial_id": "b", "epoch": 2}, error=None),
            types.SimpleNamespace(metrics={"trial_id": "a"}, error=RuntimeError("x"))]
    assert TuneRunOutcome.of(grid) == TuneRunOutcome(known=("a", "b"), failed=("a",))


def test_a_complete_search_with_an_early_stop_and_a_replaced_trial_says_so():
    # Two planned trials done: one finished, one stopped by ASHA at epoch 1; a third trained one epoch while the
    # driver died, before Tune saved it, and the resumed run replaced it.
    rows = [_row("a", 1, "running"), _row("a", 2, "finished"), _row("b", 1, "stopped"), _row("z", 1, "stopped"),
            _row("q", 2, "finished", source=Source.CONFIRM)]
    ends = run_ends(rows, Phase.STAGE1, Source.SEARCH, planned=2, outcome=TuneRunOutcome(known=("a", "b")),
                    budget_ended=False, scheduler="asha")
    assert ends.counts == {Ending.FINISHED: 1, Ending.STOPPED: 1, Ending.INTERRUPTED: 1}
    assert ends.complete
    assert ends.line() == ("Stage-I search: 2 of 2 planned trials done (1 finished, 1 stopped early by asha); "
                           "1 more was interrupted when a driver died and not counted.")


def test_a_short_run_says_how_many_are_missing_and_why():
    # "a" finished; "b" was stopped by the time budget, which a confirmation run cannot count; "c" failed before
    # its first evaluation and "e" was stopped before its first: they have no rows, only Tune's word.
    rows = [_row("a", 2, "finished", source=Source.CONFIRM), _row("b", 1, "stopped", source=Source.CONFIRM)]
    outcome = TuneRunOutcome(known=("a", "b", "c", "e"), failed=("c",))
    ends = run_ends(rows, Phase.STAGE1, Source.CONFIRM, planned=6, outcome=outcome, budget_ended=True,
                    scheduler="asha")
    assert not ends.complete and ends.done == 1
    assert ends.line() == ("Stage-I confirmation: 1 of 6 planned confirmation runs done (1 finished); 1 stopped "
                           "early by the time budget (a confirmation run counts only at its whole budget); 1 stopped "
                           "before its first evaluation; 1 failed (search.max_failures reached; their error.txt says "
                           "why); 2 never ran (the time budget ended the run first).")


def test_a_joint_trial_ends_with_its_last_stage():
    rows = [_row("a", 2, "finished", phase=Phase.JOINT), _row("a", 1, "stopped", phase=Phase.JOINT, stage=2)]
    ends = run_ends(rows, Phase.JOINT, Source.SEARCH, planned=1, outcome=None, budget_ended=False, scheduler="none")
    assert ends.counts == {Ending.STOPPED: 1}
    assert ends.line() == "joint search: 1 of 1 planned trials done (1 stopped early)."
