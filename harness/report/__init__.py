"""A sweep's report: rankings, figures, the Markdown and HTML leaderboards, and the nightly leaderboard's pages.

    python -m harness.report --storage URI --sweep NAME

build.py ranks the results and writes the report (its ``Report`` is what callers read); markdown.py
and page.py (with templates/report.html.j2) render it; plots.py draws the figures; importance.py
computes parameter importances; nightly_board.py renders the cross-night leaderboard; fmt.py writes
every number.
"""

from harness.report.build import Report, build_report, rank_trials

__all__ = ["Report", "build_report", "rank_trials"]
