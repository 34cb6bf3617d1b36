"""Storage: preflight causes named in one line, partial checkpoints never loaded, outages retried."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import torch

from harness import checkpoint, storage
from harness.errors import StorageError
from harness.preflight import preflight
from harness.run_layout import stage_run
from tests.conftest import ROOT, S3Server, free_port, write_sweep
from tests.tcp_proxy import TcpProxy


def test_preflight_passes_on_local_and_s3(s3, tmp_path):
    preflight(str(tmp_path / "store"))
    preflight(f"s3://{s3.bucket}/prefix")
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
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    else:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(var)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError) as err:
        preflight(uri)
    message = str(err.value)
    assert expected in message and uri in message and "\n" not in message
    assert "testing-secret-key" not in message


def test_tune_exits_non_zero_with_one_line_on_unusable_storage(s3):
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    out = subprocess.run([sys.executable, "harness/tune.py", "--smoke-test", "--storage", "s3://harness-test/x"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "endpoint unreachable" in lines[0], out.stderr


@pytest.fixture()
def s3_with_auth(tmp_path, monkeypatch):
    """A second endpoint that checks credentials: an IAM user with no S3 permission, a bucket."""
    import boto3

    server = S3Server(free_port(), tmp_path / "moto-auth.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    server.start()
    try:
        kw = dict(endpoint_url=server.endpoint, region_name="us-east-1",
                  aws_access_key_id="setup", aws_secret_access_key="setup")
        boto3.client("s3", **kw).create_bucket(Bucket="locked")  # the 3 actions before auth is enforced
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="no-s3-rights")
        key = iam.create_access_key(UserName="no-s3-rights")["AccessKey"]
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        yield key["AccessKeyId"]
    finally:
        server.stop()


@pytest.mark.parametrize("case,expected", [("no_permission", "access denied"),
                                           ("unknown_key", "credentials rejected (InvalidAccessKeyId)")])
def test_preflight_names_rejected_credentials(s3_with_auth, monkeypatch, case, expected):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_with_auth if case == "no_permission" else "AKIAIOSFODNN7EXAMPLE")
    with pytest.raises(StorageError) as err:
        preflight("s3://locked/sweeps")
    message = str(err.value)
    assert message == f"s3://locked/sweeps: storage preflight failed: {expected}"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in message


def _objects(s3, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint)
    return [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]


def test_a_checkpoint_without_its_marker_is_never_loaded(s3):
    run = stage_run(f"s3://{s3.bucket}/partial/run")
    meta = checkpoint.CheckpointMeta(stage=1, metrics={}, config={}, architecture={}, objective_history=[])
    ckpt = checkpoint.write(run, 1, checkpoint.serialize({"w": torch.ones(3)}), meta)
    storage.delete(f"{ckpt}/{checkpoint.MARKER}")  # state.pt and meta.json uploaded, the marker not
    assert checkpoint.latest(run) is None
    with pytest.raises(StorageError, match="not a complete checkpoint"):
        checkpoint.load(ckpt)


@pytest.mark.slow
def test_a_killed_upload_leaves_no_loadable_checkpoint(s3):
    import boto3

    uri = f"s3://{s3.bucket}/killed-upload/run"
    run = stage_run(uri)
    code = ("import torch; from harness import checkpoint; from harness.run_layout import stage_run; "
            f"checkpoint.write(stage_run({uri!r}), 1, checkpoint.serialize({{'w': torch.randn(100_000_000)}}), "
            "checkpoint.CheckpointMeta(stage=1, metrics={}, config={}, architecture={}, objective_history=[]))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # kill it in the middle of the 400 MB multipart upload
            if client.list_multipart_uploads(Bucket=s3.bucket, Prefix="killed-upload/").get("Uploads"):
                break
            assert proc.poll() is None, "the upload finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no multipart upload started")
    finally:
        proc.kill()
        proc.wait()
    assert not any(k.endswith(checkpoint.MARKER) for k in _objects(s3, "killed-upload/"))
    assert checkpoint.latest(run) is None and checkpoint.list_complete(run) == []
    with pytest.raises(StorageError):
        checkpoint.load(run.checkpoint(1))


# Enough epochs that the run is still training when the network goes down after its first or second
# checkpoint; a run that ends during an outage waits for the network to write its last epoch anyway.
EPOCHS = 8


@pytest.mark.slow
def test_a_ten_second_outage_mid_run_is_retried_and_the_run_goes_on(s3, tmp_path):
    import boto3

    proxy = TcpProxy(s3.port)
    client = boto3.client("s3", endpoint_url=s3.endpoint)  # straight to the endpoint, past the outage
    sweep = write_sweep(ROOT / "search_spaces" / "tiny.yaml", tmp_path / "sweep.yaml")
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir="/tmp")}
    outage: dict = {}

    def cut_the_network_after_the_first_checkpoint():
        deadline = time.time() + 300
        prefix = "outage/tiny/train/stage1/checkpoints/epoch-0001/"
        while time.time() < deadline and not outage:
            keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]
            if any(k.endswith(checkpoint.MARKER) for k in keys):
                outage["start"] = time.time()
                proxy.down()
                time.sleep(10)
                proxy.up()
                outage["end"] = time.time()
            time.sleep(0.1)

    cutter = threading.Thread(target=cut_the_network_after_the_first_checkpoint, daemon=True)
    cutter.start()
    try:
        out = subprocess.run(
            [sys.executable, "harness/train.py", "--sweep", sweep, "--storage", f"s3://{s3.bucket}/outage",
             "--stage", "1", "--epochs-stage1", str(EPOCHS)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
    finally:
        cutter.join(timeout=30)
        proxy.close()
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "end" in outage, "the run ended before the outage"
    assert proxy.refused > 0, "nothing touched storage during the outage"
    summary = json.loads(out.stdout[out.stdout.index("{\n"):])
    assert summary["stage1"]["status"] == "finished" and summary["stage1"]["epoch"] == EPOCHS
    metrics = [k for k in _objects(s3, "outage/tiny/train/stage1/metrics/")]
    assert len(metrics) == EPOCHS, "every epoch's evaluation reached storage"
    assert checkpoint.is_complete(summary["stage1"]["checkpoint_path"])


def test_s3_endpoint_flag_takes_the_place_of_the_environment(s3):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    bad = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run([sys.executable, "harness/tune.py", "--smoke-test", "--storage", "s3://harness-test/x",
                          "--s3-endpoint", bad], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"endpoint unreachable ({bad})" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "harness.report", "--storage", f"s3://{s3.bucket}/empty",
                          "--sweep", "nothing", "--s3-endpoint", s3.endpoint], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no sweep named 'nothing'" in out.stderr, out.stderr


@pytest.mark.slow
def test_a_long_outage_fails_the_run_cleanly_and_the_same_command_resumes_it(s3, tmp_path):
    import boto3

    proxy = TcpProxy(s3.port)
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    sweep = write_sweep(ROOT / "search_spaces" / "tiny.yaml", tmp_path / "sweep.yaml", **{"search.max_failures": 0})
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir="/tmp")}
    cmd = [sys.executable, "harness/train.py", "--sweep", sweep, "--storage", f"s3://{s3.bucket}/long-outage",
           "--stage", "1", "--epochs-stage1", str(EPOCHS)]
    prefix = "long-outage/tiny/train/stage1/"
    cut: dict = {}

    def cut_the_network_after_the_second_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline and not cut:
            keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]
            if any(k.endswith(f"epoch-0002/{checkpoint.MARKER}") for k in keys):
                cut["at"] = time.time()
                proxy.down()  # and it stays down: longer than the ~25 s of retries
            time.sleep(0.1)

    cutter = threading.Thread(target=cut_the_network_after_the_second_checkpoint, daemon=True)
    cutter.start()
    try:
        failed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        cutter.join(timeout=30)
        assert "at" in cut, "the run ended before the outage"
        assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-3000:]
        assert "error: training failed:" in failed.stderr and "run the same command again" in failed.stderr
        proxy.up()
        resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        proxy.close()
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{\n"):])
    assert summary["stage1"]["epoch"] == EPOCHS and checkpoint.is_complete(summary["stage1"]["checkpoint_path"])
    first = client.head_object(Bucket=s3.bucket, Key=f"{prefix}metrics/epoch-0001.json")["LastModified"]
    assert first.timestamp() < cut["at"], "the resumed run started over instead of resuming"
    assert len(_objects(s3, f"{prefix}metrics/")) == EPOCHS
