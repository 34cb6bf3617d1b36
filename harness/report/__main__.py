"""python -m harness.report --storage URI --sweep NAME: (re)writes a sweep's report from its storage.

Works for any finished or interrupted sweep: it reads only <storage>/<sweep>/ and prints one JSON line
(where the report is, how many result rows, the best search trial).
"""

from __future__ import annotations

import argparse
import json
import sys

from harness import cli, storage
from harness.errors import HarnessError
from harness.report.build import build_report
from harness.run_layout import SweepLayout
from harness.sweep_record import SweepRecord


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True, help="the sweep's storage root (local path or s3://...)")
    storage.add_endpoint_argument(parser)
    parser.add_argument("--sweep", required=True, help="the sweep's name")
    args = parser.parse_args(argv)
    cli.use_storage_arguments(args)
    return cli.run(lambda: _report_command(args))


def _report_command(args) -> int:
    layout = SweepLayout(args.storage, args.sweep)
    if not storage.exists(layout.record):
        raise HarnessError(f"{layout.record}: not found (no sweep named {args.sweep!r} under {args.storage})")
    record = SweepRecord.load(layout.record)
    report = build_report(layout, record.sweep, record)
    best = report.ranked[0]["trial_id"] if report.ranked else None
    print(json.dumps({"report": report.uri, "rows": len(report.rows), "best": best}))
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
