"""Storage preflight: each failure cause named in one line, quickly, with no secret in it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness.errors import StorageError
from harness.preflight import preflight
from tests.conftest import ROOT, _free_port


def test_preflight_passes_on_local_and_s3(s3, tmp_path):
    assert preflight(str(tmp_path / "store")) < 5
    assert preflight(f"s3://{s3.bucket}/prefix") < 5
    assert list((tmp_path / "store").iterdir()) == [], "the marker is deleted"


@pytest.mark.parametrize(
    "case,expected",
    [("missing_bucket", "no such bucket"), ("wrong_endpoint", "endpoint unreachable"), ("no_credentials", "no credentials")],
)
def test_preflight_names_the_cause_within_the_time_limit(s3, monkeypatch, case, expected):
    uri = f"s3://{s3.bucket}/prefix"
    if case == "missing_bucket":
        uri = "s3://no-such-bucket-here/prefix"
    elif case == "wrong_endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    else:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(var)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    t0 = time.perf_counter()
    with pytest.raises(StorageError) as err:
        preflight(uri)
    assert time.perf_counter() - t0 < 30
    message = str(err.value)
    assert expected in message and uri in message and "\n" not in message
    assert "testing-secret-key" not in message


def test_tune_exits_non_zero_with_one_line_on_unusable_storage(s3):
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "harness/tune.py", "--smoke-test", "--storage", "s3://harness-test/x"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and time.perf_counter() - t0 < 30
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "endpoint unreachable" in lines[0], out.stderr
