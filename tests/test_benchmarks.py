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
    for stage, batch in (("stage1", 8), ("stage2", 4)):
        plain = report["results"][stage]["plain"]
        assert plain["batch"] == batch and plain["finite_losses"] is True
        assert plain["ms_per_step"] > 0 and math.isclose(plain["img_per_s"], batch / plain["ms_per_step"] * 1000, rel_tol=0.02)
        assert "achieved_gflop_per_s" not in plain  # FLOP counts exist for the paper profile only
