"""Autoscaling on one machine: Ray's fake multi-node provider adds nodes for a sweep and removes them.

The head (`ray start --head --port 6379 --autoscaling-config cluster/fake_multinode.yaml`, with
RAY_FAKE_CLUSTER=1 and token auth on) offers no `fake_gpu`; the smoke sweep's trials each need one,
so they can run only on worker nodes the autoscaler starts, and those go away 12 s after going idle.
"""

from __future__ import annotations

import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from harness.results import read_parquet
from tests.conftest import ROOT, token_auth_env, write_sweep

FAKE_NODE_ID = "--node-id=" + "f" * 40  # the provider's node ids: only fake clusters use them
WATCH = """
import sys, time, ray
ray.init(address="127.0.0.1:6379", log_to_driver=False)
while True:
    print(time.time(), sum(1 for n in ray.nodes() if n["Alive"]), flush=True)
    time.sleep(1)
"""


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop_own_processes(temp: str) -> None:
    """Ends what this test started: processes naming its temp dir or a fake node id, and their children."""
    def ours(p):
        cmd = " ".join(p.info["cmdline"] or [])
        return temp in cmd or FAKE_NODE_ID in cmd
    mine = {p for p in psutil.process_iter(["cmdline"]) if ours(p)}
    for p in list(mine):
        try:
            mine |= set(p.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    for p in mine:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(mine), timeout=15)
    for p in alive:
        p.kill()


@pytest.fixture()
def fake_cluster(tmp_path):
    if _port_in_use(6379):
        pytest.skip("port 6379 is taken: the fake multi-node provider's nodes can only join a head there")
    temp = tempfile.mkdtemp(prefix="fm-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = token_auth_env(tmp_path)
    try:
        subprocess.run(
            ["ray", "start", "--head", "--port=6379", "--num-cpus=1", "--node-ip-address=127.0.0.1",
             "--dashboard-host=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats",
             f"--autoscaling-config={ROOT / 'cluster' / 'fake_multinode.yaml'}"],
            env={**env, "RAY_FAKE_CLUSTER": "1"}, check=True, capture_output=True, timeout=120, cwd=ROOT,
        )
        yield {"env": {**env, "RAY_ADDRESS": "127.0.0.1:6379"}, "temp": temp}
    finally:
        _stop_own_processes(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _node_counts(path: pathlib.Path) -> list[tuple[float, int]]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out.append((float(parts[0]), int(parts[1])))
    return out


@pytest.mark.slow
def test_the_autoscaler_adds_nodes_for_a_sweep_and_removes_them_when_idle(fake_cluster, tmp_path):
    env = fake_cluster["env"]
    # Stage-I trials of 6 epochs, none stopped early: on a fast machine 2-epoch trials ended before the autoscaler's
    # second node came up, and the second trial ran on the first trial's node (1 -> 2 nodes, never 3).
    sweep = write_sweep(ROOT / "search_spaces" / "smoke.yaml", tmp_path / "sweep.yaml",
                        **{"resources.custom_resources_per_worker": {"fake_gpu": 1}, "stage1.epochs": 6,
                           "search.scheduler": "none", "search.confirm": {"top_k": 1, "seeds": 0}})
    counts_log = tmp_path / "nodes.log"
    with open(counts_log, "w") as log:
        watcher = subprocess.Popen([sys.executable, "-c", WATCH], env=env, stdout=log, stderr=subprocess.DEVNULL)
    try:
        started = time.time()
        out = subprocess.run(
            [sys.executable, "harness/tune.py", "--sweep", sweep, "--storage", str(tmp_path / "runs"),
             "--max-concurrent", "2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        ended = time.time()
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        deadline = ended + 120
        while time.time() < deadline:  # idle nodes go after 12 s; the autoscaler acts every few seconds
            counts = _node_counts(counts_log)
            if counts and counts[-1][0] > ended and counts[-1][1] == 1:
                break
            time.sleep(2)
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
    counts = _node_counts(counts_log)
    during = [n for t, n in counts if started <= t <= ended]
    assert during and during[0] == 1, "the sweep started on the head alone"
    assert max(during) >= 3, f"two concurrent trials need two fake_gpu nodes: {sorted(set(during))}"
    assert counts[-1][1] == 1, f"idle nodes were not removed: {counts[-5:]}"
    up = next(t for t, n in counts if n >= 3)
    down = next(t for t, n in counts if t > ended and n == 1)
    print(f"1 -> 3 nodes {up - started:.1f} s after the sweep started; back to 1 node {down - ended:.1f} s after it ended")
    # The head has no fake_gpu: every trial that finished ran on a node the autoscaler added.
    rows = read_parquet(str(tmp_path / "runs" / "smoke" / "results.parquet"))
    assert len({r["trial_id"] for r in rows if r["phase"] == "stage1"}) == 2
    assert len({r["trial_id"] for r in rows if r["phase"] == "stage2"}) == 2
