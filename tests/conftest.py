"""Shared fixtures: a real S3-compatible endpoint on 127.0.0.1, a small shapes dataset, a CUB fixture."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests import cub_fixture

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A skip hides a test that did not run. Only these are expected: the PostgreSQL study tests on a machine without
# Debian's postgresql (a newcomer's laptop; README command 2 must still pass there). CI sets
# HARNESS_REQUIRE_POSTGRES=1 after installing it, so there they must run. Any other skip fails the session with its
# reason, so CI never passes on tests it silently left out. HARNESS_ALLOW_SKIPS=1 lets a developer run on a busy
# machine.
POSTGRES_MISSING = "PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)"
EXPECTED_SKIP_REASONS: tuple[str, ...] = () if os.environ.get("HARNESS_REQUIRE_POSTGRES") == "1" else (POSTGRES_MISSING,)
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        expected = bool(EXPECTED_SKIP_REASONS) and reason.removeprefix("Skipped: ").startswith(EXPECTED_SKIP_REASONS)
        if not expected:
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _unexpected_skips and os.environ.get("HARNESS_ALLOW_SKIPS") != "1" and exitstatus == 0:
        print("\nunexpected skips (set HARNESS_ALLOW_SKIPS=1 to allow them):\n  " + "\n  ".join(_unexpected_skips),
              file=sys.stderr)
        session.exitstatus = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_agent_ports() -> list[str]:
    """`ray start` flags giving a node's agents free ports of their own. Every raylet starts a dashboard
    agent, on port 52365 unless told otherwise; while another Ray of the session (ray_local) holds it, a
    second head's agent cannot listen, and its job server answers "No available agent to submit job"."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


def token_auth_env(tmp_path: pathlib.Path) -> dict:
    """The environment of a test's own Ray cluster: token auth on, the token generated under a
    HOME of its own (never the user's ~/.ray), this venv's `ray` on PATH, no inherited RAY_ADDRESS."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}",
           "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    return env


def stop_processes_naming(marker: str) -> None:
    """Ends what a test started and only that: the processes whose command line names ``marker`` (its own
    temp dir) and their descendants, SIGTERM first, then SIGKILL after 3 s. Waiting longer buys nothing: a
    head's gcs_server and autoscaler monitor outlast SIGTERM for 15 s and more, and a test's cluster has
    nothing to save."""
    import signal

    import psutil

    named = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    # Their descendants too, found before any is ended (orphans are re-parented): Ray's agents and workers
    # rename themselves (ray::DashboardAgent), so their command lines no longer name the temp dir, and a
    # surviving agent keeps its port from the next head's agent.
    family = {p.pid: p for p in named}
    for p in named:
        try:
            family.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    mine = list(family.values())
    for p in mine:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    # SIGKILL is not instant: a process with a large address space is still listed, command line and all, while
    # the kernel tears it down.
    psutil.wait_procs(alive, timeout=5)


def processes_naming(marker: str) -> list[str]:
    """The live (not zombie) processes whose command line names ``marker``, each as 'pid name status: cmdline'."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "name", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if marker in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{p.pid} {p.info['name']} {p.info['status']}: {cmdline[:160]}")
    return found


class S3Server:
    """A moto S3 server subprocess (in memory: outage tests cut the network with tests.tcp_proxy instead)."""

    def __init__(self, port: int, log_path: pathlib.Path, env: dict | None = None) -> None:
        self.port, self.log_path, self.proc = port, log_path, None
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = env or {}

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def write_sweep(base: pathlib.Path, path: pathlib.Path, **overrides) -> str:
    """Writes ``base`` (a sweep YAML) to ``path`` with dotted-key overrides, e.g. ``**{"train.batch_size": 8}``."""
    import yaml

    data = yaml.safe_load(base.read_text())
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """Starts moto on a free port, creates a bucket, and points the standard AWS variables at it."""
    server = S3Server(free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update(
        AWS_ENDPOINT_URL=server.endpoint,
        AWS_ACCESS_KEY_ID="testing-key-id",
        AWS_SECRET_ACCESS_KEY="testing-secret-key",
        AWS_REGION="us-east-1",
    )
    import boto3

    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="harness-test")
    server.bucket = "harness-test"
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def shapes_uri(tmp_path_factory) -> str:
    """A small shapes dataset (hash encoder) at the tiny and small profiles' resolutions."""
    from harness.data.shapes_store import BuildSpec, build

    uri = str(tmp_path_factory.mktemp("data") / "shapes")
    build(BuildSpec(n=800, seed=3, resolutions=(16, 32, 64), encoders=("hash",), shards=4), uri, workers=2, log=lambda m: None)
    return uri


def random_standard_inception():
    """The standard FID Inception's layout with random weights (no test downloads the real ones); its BatchNorm
    statistics are those of one batch of random images, so 94 random layers do not shrink every image's
    features to the same point."""
    from harness.metrics.inception import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics from one batch, so no layer's output collapses
            m.momentum = None
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.2)
    with torch.no_grad():
        net.train()(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8))
    return net.eval()


@pytest.fixture(scope="session")
def standard_inception_weights(tmp_path_factory) -> pathlib.Path:
    """A weights file in the standard layout (torch-fidelity's, with BatchNorm's counters), 95 MB."""
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(random_standard_inception().state_dict(), path)
    return path


@pytest.fixture()
def cub_root(tmp_path) -> pathlib.Path:
    return cub_fixture.make(tmp_path / "birds", kind="cub")


@pytest.fixture()
def flowers_root(tmp_path) -> pathlib.Path:
    return cub_fixture.make(tmp_path / "flowers", kind="flowers")


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory, s3):
    """One local Ray instance for the session, in its own temp dir, shut down at the end.

    Started after the S3 endpoint so its worker processes inherit the standard AWS variables, as
    a real cluster's nodes do from their environment or instance role (never through runtime_env).
    """
    import ray

    temp = tmp_path_factory.mktemp("ray")
    ray.init(
        num_cpus=4,  # logical CPUs: lets a Tune driver and two Train workers coexist on 2 cores
        include_dashboard=False,
        _temp_dir=str(temp),
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        log_to_driver=False,
    )
    yield temp  # Ray's session files and logs live here (tests scan them)
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_sweep(ray_local, s3, tmp_path_factory):
    """The smoke sweep, run once on the S3 endpoint with MLflow tracking on (a local sqlite store, set
    through MLflow's standard MLFLOW_TRACKING_URI), as ``python harness/tune.py --smoke-test`` runs it.
    Several tests read what it wrote: results and report, the Optuna journal, TensorBoard events, MLflow."""
    import contextlib
    import io
    import types

    from harness import tune as tune_cmd

    mlflow_dir = tmp_path_factory.mktemp("mlflow")
    root = f"s3://{s3.bucket}/sweeps"
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{mlflow_dir / 'mlflow.db'}"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = tune_cmd.main(["--smoke-test", "--storage", root])
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    assert code == 0, out.getvalue()[-3000:] + err.getvalue()[-3000:]
    return types.SimpleNamespace(root=root, sweep=f"{root}/smoke", out=out.getvalue(), err=err.getvalue(),
                                 mlflow_uri=f"sqlite:///{mlflow_dir / 'mlflow.db'}", ray_temp=ray_local)


def communicate_or_fail(proc, timeout: float, what: str) -> tuple[str, str]:
    """``proc.communicate()`` within ``timeout`` (well inside pytest's own, so a hang fails with what the process
    printed); on a timeout its process group (it was started with start_new_session) is SIGKILLed and the test fails."""
    import signal

    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{what} hung:\n{(stdout or '')[-4000:]}\n{(stderr or '')[-4000:]}")
