"""One live driver per ``s3://`` study journal: a lease object beside the journal, kept alive by a heartbeat.

A journal on S3 is worked on in a local copy and written back whole after every append (harness/study.py), so two
drivers on one journal would each write their copy over the other's trials. Optuna's journal file locks cannot
reach across machines; S3's conditional requests can:

- A driver takes the lease by creating ``<journal>.lease`` only if it does not exist (``If-None-Match: *``). The
  lease names its holder (sweep, host, process id and the process space that id belongs to) and its time to live.
- While the driver runs, a heartbeat thread rewrites the lease every ``ttl / 4`` seconds, only if it is still the
  object it wrote last (``If-Match``).
- A second driver that finds the lease held watches it: renewed meanwhile (within a quarter of its time to live),
  the holder lives, and the second driver is refused in one line, before it starts Ray; the first one keeps every
  trial. A database study (``postgresql://``) is the backend for nights that
  overlap on purpose.
- A lease not renewed for longer than its time to live is a dead driver's (SIGKILL, a lost pod), and so is one
  whose holder ran in this process space (same host name, boot and pid namespace) in a process that is gone (a
  driver killed and resumed here): the next driver
  takes it over with ``If-Match`` on the stale lease, so two drivers taking over at once cannot both win, and says
  so on stderr. The age is the endpoint's own (its Date header against the lease's Last-Modified): no two clocks
  are compared.
- A holder whose heartbeat finds the lease taken over stops writing the journal (``JournalLease.check``).
- An endpoint that ignores conditional writes (it lets a second create-only write through) is refused when the
  lease is taken: there the lease would guard nothing.
The journal's own writes are conditional too (study.MirroredJournalBackend): a write over a copy this driver did
not read fails instead of silently dropping the other's trials.
``exclusive`` holds the same kind of lease around a short read-modify-write that several drivers may need in turn
(the nightly leaderboard): there a second driver waits for the holder instead of being refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import socket
import sys
import threading
import time
import uuid

from harness import storage
from harness.errors import HarnessError

DEFAULT_TTL_S = 60.0  # a minute without a heartbeat: a dead driver's lease (the heartbeat writes every 15 s)
_HELD: dict[str, JournalLease] = {}  # journal URI -> this process's lease on it


class LeaseHeld(HarnessError):
    """Another live driver holds the journal's lease."""


class LeaseUnsupported(HarnessError):
    """The S3 endpoint does not honour conditional writes."""


class LeaseLost(HarnessError):
    """This driver's lease was taken over: it must not write the journal again."""


_JOURNAL_ADVICE = ("one driver at a time may use an s3:// journal: wait for that one to end, or give overlapping "
                   "nights a database study (--study postgresql://...)")


class JournalLease:
    def __init__(self, journal_uri: str, holder: str, ttl_s: float = DEFAULT_TTL_S, what: str = "the study journal",
                 advice: str = _JOURNAL_ADVICE, lost_means: str = "its trials since then are not in the study") -> None:
        """``what``, ``advice`` (when refused) and ``lost_means`` (when taken over) word the messages: a lease also
        guards the nightly leaderboard (``exclusive``)."""
        if ttl_s <= 0:
            raise ValueError(f"lease ttl must be > 0, got {ttl_s}")
        self.journal_uri, self.uri, self.ttl_s = journal_uri, f"{journal_uri}.lease", ttl_s
        self.what, self.advice, self.lost_means = what, advice, lost_means
        self.token = uuid.uuid4().hex  # tells this driver's lease from a later one of the same host and pid
        self.body = {"holder": holder, "host": socket.gethostname(), "pid": os.getpid(), "pid_space": _pid_space(),
                     "token": self.token, "ttl_s": ttl_s, "beat": 0}
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _encoded(self) -> bytes:
        return json.dumps(self.body, sort_keys=True).encode()

    def acquire(self, wait_s: float = 0.0) -> JournalLease:
        """Takes the lease, or takes over a dead holder's; LeaseHeld when a live driver holds it.

        A lease's age alone cannot tell a live holder from one killed just after a heartbeat, so a lease found held
        is watched: renewed meanwhile, its holder lives (refused, within a quarter of its time to live; or, with
        ``wait_s``, waited for until it releases the lease, for up to ``wait_s`` seconds); not renewed within its
        time to live, its holder is dead (taken over)."""
        self._check_conditional_writes()
        watched, told = None, False
        give_up = time.monotonic() + wait_s
        while True:
            try:
                self.etag = storage.write_if(self.uri, self._encoded(), None)
                break
            except storage.PreconditionFailed:
                pass
            current = storage.read_versioned(self.uri)
            if current.etag is None:  # released between the refused create and the read
                time.sleep(0.2)
                continue
            other = _holder(current.data)
            ttl = float(other.get("ttl_s", DEFAULT_TTL_S))
            gone = _same_pid_space(other) and not _pid_alive(other.get("pid"))
            if gone or (current.age_s is not None and current.age_s > ttl):
                try:
                    self.etag = storage.write_if(self.uri, self._encoded(), current.etag)
                except storage.PreconditionFailed:  # another driver took it over first: watch that one
                    watched = None
                    continue
                why = "its process is gone" if gone else f"no heartbeat for {current.age_s:.0f} s (time to live {ttl:.0f} s)"
                print(f"warning: {self.journal_uri}: took over {self.what}'s lease from {_describe(other)}: {why}",
                      file=sys.stderr, flush=True)
                break
            if watched is not None and current.etag != watched and time.monotonic() >= give_up:
                raise LeaseHeld(f"{self.journal_uri}: {self.what} is in use by {_describe(other)}, which renewed "
                                f"its lease {current.age_s:.0f} s ago; {self.advice}")
            watched = current.etag
            if not told:
                wait = (f"waiting up to {wait_s:.0f} s for it to finish" if wait_s else
                        f"waiting up to {ttl:.0f} s to see whether it is alive")
                print(f"{self.journal_uri}: {self.what}'s lease is held by {_describe(other)} (renewed "
                      f"{current.age_s:.0f} s ago); {wait}", file=sys.stderr, flush=True)
                told = True
            time.sleep(min(5.0, max(0.2, ttl / 20)))
        _HELD[self.journal_uri] = self
        self._thread = threading.Thread(target=self._beat, name="journal-lease", daemon=True)
        self._thread.start()
        return self

    def _check_conditional_writes(self) -> None:
        """Refuses an endpoint that ignores If-None-Match (some S3-compatible stores do): there a second driver's
        create would silently replace the lease, and nothing would guard the journal."""
        probe = f"{self.uri}-probe-{self.token}"
        storage.write_if(probe, b"", None)
        try:
            storage.write_if(probe, b"", None)
        except storage.PreconditionFailed:
            return
        finally:
            storage.delete(probe)
        raise LeaseUnsupported(f"{self.journal_uri}: this S3 endpoint ignores conditional writes (If-None-Match), so "
                               f"{self.what} cannot be leased to one driver; keep the study in a database "
                               f"(--study postgresql://...)")

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            self.renew()

    def renew(self) -> None:
        """One heartbeat. A transient S3 error is retried at the next beat (the time to live allows three)."""
        if self.lost:
            return
        self.body["beat"] += 1
        try:
            self.etag = storage.write_if(self.uri, self._encoded(), self.etag)
        except storage.PreconditionFailed:
            try:
                current = storage.read_versioned(self.uri)
            except storage.StorageError as exc:  # told at the next beat; the thread must not die of it
                print(f"warning: lease heartbeat: {exc}", file=sys.stderr, flush=True)
                return
            if current.data is not None and _holder(current.data) == self.body:  # ours: a retried write that landed
                self.etag = current.etag
                return
            self.lost = True
            print(f"warning: {self.journal_uri}: this driver's lease on {self.what} was taken over by "
                  f"{_describe(_holder(current.data)) if current.data else 'nobody (deleted)'}; it writes it no "
                  f"more", file=sys.stderr, flush=True)
        except storage.StorageError as exc:
            print(f"warning: lease heartbeat: {exc}", file=sys.stderr, flush=True)

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"{self.journal_uri}: this driver's lease on {self.what} was taken over by another "
                            f"driver; {self.lost_means}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if _HELD.get(self.journal_uri) is self:
            del _HELD[self.journal_uri]
        if not self.lost and self.etag is not None:
            try:
                storage.delete_if(self.uri, self.etag)
            except storage.StorageError:  # taken over meanwhile, or S3 away: the lease then expires by itself
                pass

    def __enter__(self) -> JournalLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def exclusive(uri: str, holder: str, what: str, wait_s: float = 3600.0, advice: str = ""):
    """One driver at a time through a read-modify-write of ``uri`` (the nightly leaderboard's files, which two
    overlapping nights on a database study both update); a second one waits, saying so once.

    On S3 a lease beside ``uri`` (as for a journal, but waited for: the holder's heartbeat shows it is alive, and a
    dead holder's lease is taken over); on a local path an OS file lock beside it, ``<uri>.lock``, which is left in
    place (one host: flock does not reach across machines). Where neither can be had (an S3 endpoint that ignores
    conditional writes, a filesystem without locks) it warns and goes on unlocked: the write matters more than the
    race. LeaseHeld after ``wait_s``, or LeaseLost when the lease was taken over meanwhile; ``advice`` ends both."""
    if storage.is_s3(uri):
        lease = JournalLease(uri, holder, what=what, advice=f"it did not finish within {wait_s:.0f} s; {advice}",
                             lost_means=f"{what} may have been written over meanwhile; {advice}")
        try:
            lease.acquire(wait_s=wait_s)
        except LeaseUnsupported:
            print(f"warning: {uri}: this S3 endpoint ignores conditional writes, so {what} is written unlocked (two "
                  f"drivers writing it at once may lose one's rows)", file=sys.stderr, flush=True)
            lease = None
        try:
            yield
            if lease is not None:
                lease.check()
        finally:
            if lease is not None:
                lease.release()
        return
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
    with open(f"{uri}.lock", "a") as lock:  # the lock goes with the open file: released on close, or on death
        _lock_file(lock, f"{uri}.lock", what, wait_s, advice)
        yield


def _lock_file(lock, path: str, what: str, wait_s: float, advice: str) -> None:
    give_up, told = time.monotonic() + wait_s, False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as exc:  # ENOLCK and the like: a filesystem that cannot lock
            print(f"warning: {path}: cannot lock {what} here ({exc.strerror}); writing it unlocked", file=sys.stderr,
                  flush=True)
            return
        if time.monotonic() >= give_up:
            raise LeaseHeld(f"{path}: {what} has been locked by another process of this host for {wait_s:.0f} s; "
                            f"{advice}")
        if not told:
            print(f"{path}: {what} is being written by another process of this host; waiting up to {wait_s:.0f} s for "
                  f"it to finish", file=sys.stderr, flush=True)
            told = True
        time.sleep(0.5)


def check_held(journal_uri: str) -> None:
    """Raises LeaseLost if this process held the journal's lease and lost it (a journal write must stop)."""
    lease = _HELD.get(journal_uri)
    if lease is not None:
        lease.check()


@functools.cache  # fixed for the life of a process; a waiting driver asks on every look at the lease
def _pid_space() -> str | None:
    """Where a process id means one process: this boot of this kernel and this pid namespace. Containers can share a
    host name (Kubernetes pods with hostNetwork carry the node's, a resumed pod keeps its name on another node) but
    not a pid namespace; None where /proc does not tell (not Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _same_pid_space(holder: dict) -> bool:
    """Whether ``holder``'s pid can be looked up here. A lease without a pid space (one written where /proc does not
    tell, or by an older harness) counts as this space only where this driver cannot tell either: elsewhere only
    its heartbeat can say it is dead."""
    return holder.get("host") == socket.gethostname() and holder.get("pid_space") == _pid_space()


def _pid_alive(pid) -> bool:
    """Whether process ``pid`` of this pid space runs (a driver killed here and resumed here need not wait out the
    time to live; elsewhere only the heartbeat can tell)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # someone else's process, or no pid recorded: trust the heartbeat
    return True


def _holder(data: bytes | None) -> dict:
    try:
        return json.loads(data or b"{}")
    except ValueError:
        return {}


def _describe(holder: dict) -> str:
    return f"{holder.get('holder', 'a driver')} (host {holder.get('host', '?')}, pid {holder.get('pid', '?')})"
