"""One live driver per s3:// study journal: the lease (harness/journal_lease.py) and the conditional journal writes
(harness/study.py), against the S3-compatible test endpoint."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import optuna
import pytest

from harness import journal_lease, storage
from harness.journal_lease import JournalLease, LeaseHeld, LeaseLost
from harness.study import JournalConflict, StudyStore
from tests.conftest import ROOT


def _journal(s3) -> str:
    return f"s3://{s3.bucket}/lease-test/{uuid.uuid4().hex[:8]}/study.journal"


def _stale_lease(uri: str, host: str, ttl_s: float, pid: int = 1, pid_space: str | None = None) -> None:
    """A lease as a driver on another host leaves it when it dies: never renewed again."""
    body = {"holder": "night 2026-12-01 of smoke", "host": host, "pid": pid, "pid_space": pid_space, "token": "dead",
            "ttl_s": ttl_s, "beat": 3}
    storage.write_if(f"{uri}.lease", json.dumps(body).encode(), None)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_driver_is_refused_while_the_holder_renews_and_takes_the_lease_once_released(s3):
    uri = _journal(s3)
    first = JournalLease(uri, "night 2026-12-01 of smoke", ttl_s=2.0).acquire()
    try:
        t0 = time.monotonic()
        with pytest.raises(LeaseHeld) as refused:
            JournalLease(uri, "night 2026-12-02 of smoke", ttl_s=2.0).acquire()
        # Refused once the holder's heartbeat (every ttl / 4 = 0.5 s) was seen, well inside the time to live.
        assert time.monotonic() - t0 < 2.0
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"{uri}: the study journal is in use by night 2026-12-01")
        assert f"pid {os.getpid()}" in message and "--study postgresql://" in message
    finally:
        first.release()
    assert not storage.exists(f"{uri}.lease")  # released: nothing left for the next night to wait on
    JournalLease(uri, "night 2026-12-02 of smoke", ttl_s=2.0).acquire().release()


def test_a_dead_holders_lease_is_taken_over_after_its_time_to_live_and_the_takeover_is_logged(s3, capsys):
    uri = _journal(s3)
    _stale_lease(uri, "pod-gone-7f9c", ttl_s=1.0)
    t0 = time.monotonic()
    lease = JournalLease(uri, "night 2026-12-02 of smoke", ttl_s=1.0).acquire()
    try:
        assert time.monotonic() - t0 >= 1.0  # watched until the dead holder's time to live ran out
        err = capsys.readouterr().err
        assert "waiting up to 1 s to see whether it is alive" in err
        assert (f"{uri}: took over the study journal's lease from night 2026-12-01 of smoke (host pod-gone-7f9c, "
                f"pid 1): no heartbeat for") in err
        held = json.loads(storage.read_bytes(f"{uri}.lease"))
        assert held["token"] == lease.token and held["holder"] == "night 2026-12-02 of smoke"
    finally:
        lease.release()


def test_a_holder_killed_on_this_host_is_taken_over_at_once(s3, capsys):
    uri = _journal(s3)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from harness.journal_lease import JournalLease; "
                               "JournalLease(sys.argv[1], 'night 2026-12-01 of smoke').acquire(); "
                               "print('held', flush=True); time.sleep(600)", uri],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld):  # alive: its heartbeat (default time to live 60 s, so every 15 s) is seen
            JournalLease(uri, "night 2026-12-02 of smoke", ttl_s=60.0).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    t0 = time.monotonic()
    JournalLease(uri, "night 2026-12-02 of smoke").acquire().release()
    assert time.monotonic() - t0 < 5.0  # no wait for the 60 s time to live: its process is gone
    assert f"pid {holder.pid}): its process is gone" in capsys.readouterr().err


@pytest.mark.skipif(journal_lease._pid_space() is None, reason="no /proc: pid spaces cannot be told apart here")
def test_a_dead_pid_of_this_host_name_in_another_pid_namespace_waits_for_the_time_to_live(s3, capsys):
    # Pods with hostNetwork share their node's host name, and a resumed pod keeps its name on another node: there the
    # holder's pid means some other process, or none, so only its heartbeat can say it died.
    uri, pid = _journal(s3), _dead_pid()
    boot, namespace = journal_lease._pid_space().split("/")
    _stale_lease(uri, socket.gethostname(), ttl_s=1.0, pid=pid, pid_space=f"{boot}/{int(namespace) + 1}")
    t0 = time.monotonic()
    JournalLease(uri, "night 2026-12-02 of smoke", ttl_s=1.0).acquire().release()
    assert time.monotonic() - t0 >= 1.0
    err = capsys.readouterr().err
    assert "no heartbeat for" in err and "its process is gone" not in err
    # The same dead pid in this process space is taken over at once.
    _stale_lease(uri, socket.gethostname(), ttl_s=60.0, pid=pid, pid_space=journal_lease._pid_space())
    t0 = time.monotonic()
    JournalLease(uri, "night 2026-12-03 of smoke", ttl_s=60.0).acquire().release()
    assert time.monotonic() - t0 < 5.0 and f"pid {pid}): its process is gone" in capsys.readouterr().err


def test_two_drivers_started_together_get_one_lease(s3):
    uri = _journal(s3)
    script = ("import sys, time; from harness.journal_lease import JournalLease, LeaseHeld\n"
              "try:\n    lease = JournalLease(sys.argv[1], sys.argv[2], ttl_s=2.0).acquire()\n"
              "except LeaseHeld:\n    print('refused', flush=True); sys.exit(0)\n"
              "print('held', flush=True); time.sleep(3); lease.release()")
    drivers = [subprocess.Popen([sys.executable, "-c", script, uri, f"driver {i}"], cwd=ROOT, stdout=subprocess.PIPE,
                                text=True) for i in range(2)]
    outcomes = sorted(d.communicate(timeout=60)[0].strip() for d in drivers)
    assert outcomes == ["held", "refused"]


def test_a_holder_whose_lease_was_taken_over_stops_writing_the_journal(s3, capsys):
    uri = _journal(s3)
    store = StudyStore(uri)
    lease = store.hold("night 2026-12-01 of smoke", ttl_s=60.0).acquire()
    try:
        study = optuna.create_study(study_name="s", storage=store.storage())
        study.enqueue_trial({"x": 1.0})
        # Another driver takes the lease over (as after this one's heartbeat stalled for a whole time to live).
        storage.write_if(f"{uri}.lease", b'{"holder": "night 2026-12-02 of smoke", "token": "other"}', lease.etag)
        lease.renew()
        assert lease.lost and "was taken over by night 2026-12-02 of smoke" in capsys.readouterr().err
        with pytest.raises(LeaseLost):
            study.enqueue_trial({"x": 2.0})
    finally:
        lease.release()
    assert journal_lease._HELD == {}
    assert storage.exists(f"{uri}.lease")  # the new holder's lease is not deleted by the old holder's release


def test_a_journal_written_by_another_driver_is_not_written_over(s3):
    uri = _journal(s3)
    store = StudyStore(uri)
    study = optuna.create_study(study_name="s", storage=store.storage())
    study.enqueue_trial({"x": 1.0})
    theirs = storage.read_bytes(uri) + b'{"op_code": 0, "worker_id": "theirs", "study_name": "t", "directions": [1]}\n'
    storage.write_bytes(uri, theirs)  # another driver's write-back, made from the copy this one read
    with pytest.raises(JournalConflict, match="another driver wrote the study journal since this one read it"):
        study.enqueue_trial({"x": 2.0})
    assert storage.read_bytes(uri) == theirs


def test_an_endpoint_that_ignores_conditional_writes_is_refused_in_one_line(s3, monkeypatch):
    from harness.journal_lease import LeaseUnsupported

    uri = _journal(s3)
    plain = storage.write_if

    def unconditional(target, data, etag):  # what an S3-compatible store without If-None-Match support does
        return plain(target, data, None) if not storage.exists(target) else storage.write_bytes(target, data)

    monkeypatch.setattr(storage, "write_if", unconditional)
    with pytest.raises(LeaseUnsupported) as refused:
        JournalLease(uri, "night 2026-12-01 of smoke").acquire()
    assert str(refused.value) == (f"{uri}: this S3 endpoint ignores conditional writes (If-None-Match), so the study "
                                  f"journal cannot be leased to one driver; keep the study in a database "
                                  f"(--study postgresql://...)")
    assert not storage.exists(f"{uri}.lease") and storage.list_files(uri.rsplit("/", 1)[0]) == []  # no probe left


_READ_MODIFY_WRITE = """
import json, sys, time
from harness import journal_lease, storage
uri, me, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))  # all four begin together, whatever their imports took
with journal_lease.exclusive(uri, f"night {me}", "the leaderboard", advice="try again"):
    rows = json.loads(storage.read_bytes(uri)) if storage.exists(uri) else []
    time.sleep(0.5)  # as a night renders its board between reading and writing: without the lock, rows are lost
    storage.write_bytes(uri, json.dumps(rows + [me]).encode())
"""


@pytest.mark.parametrize("where", ["s3", "local"])
def test_nights_writing_the_leaderboard_at_once_take_turns_and_keep_every_row(where, s3, tmp_path):
    uri = (f"s3://{s3.bucket}/lease-test/{uuid.uuid4().hex[:8]}/leaderboard/nights.json" if where == "s3"
           else str(tmp_path / "leaderboard" / "nights.json"))
    start = time.time() + 8
    writers = [subprocess.Popen([sys.executable, "-c", _READ_MODIFY_WRITE, uri, f"2026-12-0{i}", str(start)],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True) for i in range(1, 5)]
    try:
        errs = [w.communicate(timeout=120)[1] for w in writers]
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert [w.returncode for w in writers] == [0] * 4, errs
    assert sorted(json.loads(storage.read_bytes(uri))) == [f"2026-12-0{i}" for i in range(1, 5)]
    waited = [e for e in errs if "for it to finish" in e]
    assert waited, errs  # they did meet: at least one waited for another, and said so
    if where == "s3":
        assert not storage.exists(f"{uri}.lease")  # the last one released it
        assert "the leaderboard's lease is held by night 2026-12-0" in waited[0]
    else:
        assert "the leaderboard is being written by another process of this host" in waited[0]


def test_an_endpoint_that_ignores_conditional_writes_still_gets_its_leaderboard_written_with_a_warning(
        s3, monkeypatch, capsys):
    uri = f"s3://{s3.bucket}/lease-test/{uuid.uuid4().hex[:8]}/leaderboard/nights.json"
    plain = storage.write_if
    monkeypatch.setattr(storage, "write_if", lambda target, data, etag: plain(target, data, None)
                        if not storage.exists(target) else storage.write_bytes(target, data))
    with journal_lease.exclusive(uri, "night 2026-12-01 of smoke", "the leaderboard"):
        storage.write_bytes(uri, b"[]")
    assert storage.read_bytes(uri) == b"[]"
    assert "ignores conditional writes, so the leaderboard is written unlocked" in capsys.readouterr().err
