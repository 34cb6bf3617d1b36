"""A chaos soak: one sweep on a local cluster (a head and 2 `ray start` nodes on 127.0.0.1, token auth on) with its
storage on the S3 test endpoint survives, in the same run, trial processes SIGKILLed every 20-30 s, a node killed
and replaced, and a 15-second outage of the S3 endpoint.

The head offers no trial `slot`, so trials run on the two nodes. The chaos starts once the first trial has written
a checkpoint, and runs one event at a time, 20-30 s apart (seeded): kills of a trial process (at most 5, never the
same trial twice in a row), the death of a whole node (every process of it, by PID) and a new node joining in its
place, and the endpoint going away for 15 s (tests/tcp_proxy.py: every connection reset, as a dead endpoint does).
The sweep must exit 0 with every planned trial of both phases finished, results.parquet and the report complete,
and nothing the test started left running.

A sweep of fixed size lasts 3-4 times longer on some CI machines than on others. It is sized for the slow ones; where
it ends before the faults have landed, it runs again with its epochs scaled to this machine (see EPOCHS).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

from harness import storage
from harness.results import read_parquet
from tests.conftest import ROOT, free_port, processes_naming, stop_processes_naming, token_auth_env, write_sweep
from tests.tcp_proxy import TcpProxy
from tests.test_node_failure import _kill_tree, _wait_for_slot_nodes

MAX_TRIAL_KILLS = 5
OUTAGE_S = 15.0
PLANNED = {("stage1", "search"): 2, ("stage1", "confirm"): 4, ("stage2", "search"): 2, ("stage2", "confirm"): 4}


def _trial_processes(nodes: list[subprocess.Popen]) -> dict[str, psutil.Process]:
    """The live trial processes on the nodes, by Tune trial name (a trial process works in its trial's directory)."""
    found = {}
    for node in nodes:
        try:
            family = psutil.Process(node.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in family:
            try:
                if "ImplicitFunc" in p.name() or "ImplicitFunc" in " ".join(p.cmdline()):
                    trial = os.path.basename(p.cwd())
                    if trial.startswith("stage_trial_"):
                        found[trial] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return found


class Chaos:
    """The faults, one at a time, 20-30 s apart, while the driver runs."""

    def __init__(self, rng: random.Random, proxy: TcpProxy, nodes: list[subprocess.Popen], add_node, driver) -> None:
        self.rng, self.proxy, self.nodes, self.add_node, self.driver = rng, proxy, nodes, add_node, driver
        self.log: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.last_killed: str | None = None

    def run(self) -> None:
        events = ["trial", "node", "trial", "outage", "trial", "trial", "trial"]
        for event in events:
            if self.stop.wait(self.rng.uniform(20, 30)) or self.driver.poll() is not None:
                return
            if event == "trial":
                self.kill_a_trial()
            elif event == "node":
                victim = self.nodes[0]
                _kill_tree(victim)  # the machine is gone: raylet, object store, trial processes
                self.nodes.remove(victim)
                self.add_node()  # appends the new node to self.nodes
                self.log.append((time.time(), "node killed and replaced"))
            else:
                self.proxy.down()
                self.stop.wait(OUTAGE_S)
                self.proxy.up()
                self.log.append((time.time(), f"S3 endpoint down for {OUTAGE_S:.0f} s"))

    def kill_a_trial(self) -> None:
        deadline = time.time() + 15  # between phases, or while Tune reschedules, no trial may be running yet
        while not (running := {t: p for t, p in _trial_processes(self.nodes).items() if t != self.last_killed}):
            if time.time() > deadline or self.stop.wait(0.5):
                self.log.append((time.time(), "no trial process to kill"))
                return
        trial = self.rng.choice(sorted(running))
        try:
            running[trial].kill()
        except psutil.NoSuchProcess:
            return
        self.last_killed = trial
        self.log.append((time.time(), f"killed trial {trial}"))


@pytest.fixture()
def cluster(tmp_path):
    temp = tempfile.mkdtemp(prefix="chaos-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = token_auth_env(tmp_path)
    port = free_port()
    subprocess.run(["ray", "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                    f"--temp-dir={temp}", "--disable-usage-stats", "--include-dashboard=false"],
                   env=env, check=True, capture_output=True, timeout=120)
    nodes: list[subprocess.Popen] = []
    started = itertools.count()

    def add_node() -> subprocess.Popen:
        """A node with 1 trial slot, its processes children of this one (--block), so they end by PID. Two nodes on
        one IP need ports of their own: the agents' defaults are fixed (52365...), and the second node to start
        then never registered, 2 times of 3."""
        ports = [f"--{name}={free_port()}" for name in (
            "node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port")]
        log = open(tmp_path / f"node-{next(started)}.log", "w")  # one log per start: a failed one's is kept
        node = subprocess.Popen(["ray", "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                                 "--num-cpus=1", '--resources={"slot": 1}', "--disable-usage-stats", *ports, "--block"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        nodes.append(node)
        return node

    try:
        yield {"env": {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}, "add_node": add_node, "nodes": nodes,
               "temp": temp}
    finally:
        for node in list(nodes):
            _kill_tree(node, signal.SIGTERM)
        stop_processes_naming(temp)
        shutil.rmtree(temp, ignore_errors=True)


# The sweep's size. The faults need 115-165 s of sweep after the first checkpoint (5 events 20-30 s apart, one of
# them a 15-s outage), and how long a sweep of fixed size lasts depends on the machine: this one ran 190-240 s on a
# 2-core AMD EPYC VM, faults included, and 59-76 s on a 2-core Intel Xeon one, where 1-2 faults landed. A rerun
# aims at CHAOS_WINDOW_S of sweep without faults (at 3x, 164 s with them landed exactly the 5 events needed).
EPOCHS = {"stage1": 6, "stage2": 3}
CHAOS_WINDOW_S = 200.0


@pytest.mark.slow
def test_a_sweep_survives_killed_trials_a_lost_node_and_an_s3_outage_at_once(cluster, s3, tmp_path):
    seed = int(os.environ.get("CHAOS_SEED", "0"))  # the soak's schedule; a failure names the seed that found it
    for count in (1, 2):  # one at a time: a second `ray start` begun beside the first took 90 s to come up
        cluster["add_node"]()
        _wait_for_slot_nodes(cluster, count, timeout_s=300)
    soaks = [_soak(cluster, s3, tmp_path / "run-1", seed, scale=1)]
    if not _all_faults_landed(soaks[0].events):
        # The sweep ended before the schedule did: this machine trains it faster than it was sized for. Run it again,
        # as many times longer as the faults need, measured from this run (whose faults were survived all the same).
        scale = min(4, max(2, math.ceil(CHAOS_WINDOW_S / soaks[0].window_s)))
        print(f"chaos seed {seed}: the sweep outran the faults ({soaks[0].window_s:.0f} s of chaos); again at {scale}x")
        # A node replaced late in the first run may still be joining.
        _wait_for_slot_nodes(cluster, 2, timeout_s=300)
        soaks.append(_soak(cluster, s3, tmp_path / "run-2", seed, scale=scale))
    assert _all_faults_landed(soaks[-1].events), f"too few faults landed: {soaks[-1].events}"
    assert soaks[-1].refused > 0, "nothing touched storage during the outage"
    for soak in soaks:
        rows = read_parquet(f"{soak.root}/chaos/results.parquet")
        for (phase, source), planned in PLANNED.items():
            finished = {r["trial_id"] for r in rows if r["phase"] == phase and r["source"] == source
                        and r["status"] == "finished"}
            assert len(finished) == planned, (phase, source, finished, soak.events)
        assert "planned trials done" in storage.read_bytes(f"{soak.root}/chaos/report/leaderboard.md").decode()
        assert storage.exists(f"{soak.root}/chaos/report/leaderboard.html")
    # Nothing left behind: the cluster's processes end with it, and none outlives it.
    for node in list(cluster["nodes"]):
        _kill_tree(node, signal.SIGTERM)
    # Ended twice if need be: a raylet still alive after the first pass may have started one more worker.
    deadline = time.monotonic() + 15
    while True:
        stop_processes_naming(cluster["temp"])
        left = processes_naming(cluster["temp"])
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not left, left
    assert not [n.pid for n in cluster["nodes"] if psutil.pid_exists(n.pid)
                and psutil.Process(n.pid).status() != psutil.STATUS_ZOMBIE]


def _all_faults_landed(events: list[str]) -> bool:
    """At least 3 trial kills, the node, and the outage."""
    return (sum(e.startswith("killed trial") for e in events) >= 3 and "node killed and replaced" in events
            and f"S3 endpoint down for {OUTAGE_S:.0f} s" in events)


@dataclasses.dataclass
class Soak:
    root: str
    events: list[str]
    window_s: float  # from the first checkpoint, when the faults begin, to the driver's exit
    refused: int  # connections the endpoint's relay refused during its outage


def _soak(cluster, s3, run_dir, seed: int, scale: int) -> Soak:
    """One sweep under the fault schedule, its Stage-I and Stage-II epochs ``scale`` times EPOCHS. Asserts it exited 0."""
    run_dir.mkdir()
    root = f"s3://{s3.bucket}/chaos-{seed}-{os.getpid()}-{time.time_ns()}"
    sweep = write_sweep(ROOT / "search_spaces" / "smoke.yaml", run_dir / "sweep.yaml",
                        **{"name": "chaos", "data.n": 1200, "stage1.epochs": EPOCHS["stage1"] * scale,
                           "stage2.epochs": EPOCHS["stage2"] * scale, "search.scheduler": "none",
                           "search.max_concurrent": 2, "search.max_failures": 4,
                           "resources.custom_resources_per_worker": {"slot": 1}})
    proxy = TcpProxy(s3.port)
    env = {**cluster["env"], "AWS_ENDPOINT_URL": proxy.endpoint, "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    driver = subprocess.Popen([sys.executable, "harness/tune.py", "--sweep", sweep, "--storage", root], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(driver.stdout), daemon=True)
    reader.start()
    chaos = Chaos(random.Random(seed), proxy, cluster["nodes"], cluster["add_node"], driver)
    agent = None
    try:
        deadline = time.time() + 300
        while driver.poll() is None and time.time() < deadline and not _any_checkpoint(s3, root):
            time.sleep(0.5)
        assert driver.poll() is None, "".join(output)[-4000:]
        chaos_t0 = time.time()
        agent = threading.Thread(target=chaos.run, daemon=True)
        agent.start()
        driver.wait(timeout=1500)
        window_s = time.time() - chaos_t0
    finally:
        chaos.stop.set()
        if agent is not None:
            agent.join(timeout=120)  # a node it is replacing has joined before the next run or the teardown
        if driver.poll() is None:
            _kill_tree(driver)
        reader.join(timeout=30)
        proxy.close()
    out = "".join(output)
    events = [e for _, e in chaos.log]
    (run_dir / "driver.log").write_text(out)
    print(f"chaos seed {seed}, {scale}x: {time.time() - t0:.0f} s, events {events}")
    assert driver.returncode == 0, f"seed {seed}, events {events}\n{out[-5000:]}"
    return Soak(root, events, window_s, proxy.refused)


def _any_checkpoint(s3, root: str) -> bool:
    import boto3

    prefix = root.split(f"s3://{s3.bucket}/", 1)[1] + "/chaos/trials/"
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]
    return any(k.endswith("/COMMITTED") for k in keys)
