"""`ray job submit -- python harness/tune.py ...` against a `ray start` head with token authentication.

The project is not pip-installed on the cluster: `--working-dir .` ships the code; dependencies come
from the cluster's environment (here the test's virtualenv on PATH, on a real cluster the image).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from harness.results import read_parquet
from tests.conftest import ROOT, free_port, own_agent_ports, stop_processes_naming, token_auth_env


@pytest.fixture()
def ray_head(s3, tmp_path):
    temp = tempfile.mkdtemp(prefix="rj-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = token_auth_env(tmp_path)  # the cluster's auth token lands in $HOME/.ray, not the user's
    home = pathlib.Path(env["HOME"])
    port, dash = free_port(), free_port()
    subprocess.run(
        ["ray", "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
         "--include-dashboard=true", *own_agent_ports()],
        env=env, check=True, capture_output=True, timeout=120,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 240  # on a loaded 2-core machine the agent has taken over 90 s
        while True:  # the node's job agent comes up some seconds after `ray start` (and after `job list` answers)
            ready = subprocess.run(["ray", "job", "submit", "--address", address, "--no-wait", "--", "true"],
                                   env=env, capture_output=True, timeout=60)
            if ready.returncode == 0:
                break
            if time.time() > deadline:
                pytest.fail(f"the head's job agent did not accept a job within 240 s: {ready.stderr.decode()[-500:]}")
            time.sleep(2)
        yield {"env": env, "address": address, "home": home}
    finally:
        stop_processes_naming(temp)  # end only what this fixture started
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_runs_the_smoke_sweep_into_s3(ray_head, s3):
    assert (ray_head["home"] / ".ray" / "auth_token").exists(), "ray start turned token auth on"
    storage = f"s3://{s3.bucket}/job-sweeps"
    out = subprocess.run(
        ["ray", "job", "submit", "--address", ray_head["address"], "--working-dir", ".", "--",
         "python", "harness/tune.py", "--sweep", "search_spaces/smoke.yaml", "--storage", storage],
        cwd=ROOT, env=ray_head["env"], capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "succeeded" in out.stdout, out.stdout[-4000:]
    assert "=== Leaderboard: smoke" in out.stdout
    rows = read_parquet(f"{storage}/smoke/results.parquet")
    assert {r["phase"] for r in rows} == {"stage1", "stage2"}
    # Without the token the cluster refuses the client.
    env = {**ray_head["env"], "HOME": str(ray_head["home"].parent)}
    denied = subprocess.run(["ray", "job", "list", "--address", ray_head["address"]], env=env,
                            capture_output=True, text=True, timeout=120)
    assert denied.returncode != 0
