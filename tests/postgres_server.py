"""A throwaway PostgreSQL server for the tests: Debian's postgresql binaries (.ci/run installs them), a cluster
made by initdb in a temp dir, listening on a free port of 127.0.0.1 only, stopped and removed afterwards.
initdb refuses to run as root, so under root (CI) the server runs as the ``postgres`` user the package made."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from tests.conftest import free_port

USER, PASSWORD, DATABASE = "harness", "pg-test-password", "studies"


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return _bin("initdb") is not None and _bin("pg_ctl") is not None


class PostgresServer:
    """A running throwaway server: ``url`` to connect, ``stop()`` and ``start()`` to take it away and back on the
    same port and data (as a database restart or failover does to a night)."""

    def __init__(self, root: str, as_user: list[str], port: int) -> None:
        self.root, self.as_user, self.port = root, as_user, port
        self.data, self.log = f"{root}/data", f"{root}/log"
        self.url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, _bin("pg_ctl"), "-D", self.data, *args], check=True, capture_output=True,
                       text=True, timeout=120)

    def start(self) -> None:
        self._ctl("-l", self.log, "-w", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as in a restart."""
        self._ctl("-m", "fast", "-w", "stop")


@contextlib.contextmanager
def running_postgres():
    """Yields a fresh PostgresServer; stops it and removes its files afterwards."""
    root = tempfile.mkdtemp(prefix="pg-", dir="/tmp")  # short: the socket path must stay < 108 bytes
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    pwfile = f"{root}/pw"
    with open(pwfile, "w") as f:
        f.write(PASSWORD)
    if as_user:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(root, as_user, free_port())
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        run(_bin("initdb"), "-D", server.data, "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256")
        server.start()
        run("env", f"PGPASSWORD={PASSWORD}", _bin("createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", USER,
            DATABASE)
        yield server
    finally:
        if os.path.exists(f"{server.data}/postmaster.pid"):
            subprocess.run([*as_user, _bin("pg_ctl"), "-D", server.data, "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server():
    """Yields the URL (postgresql://harness:PASSWORD@127.0.0.1:PORT/studies) of a fresh server."""
    with running_postgres() as server:
        yield server.url
