"""Preflight before Ray starts: the storage URI is writable and every input a sweep names exists.

``preflight`` writes, reads back and deletes a marker object through the same pyarrow filesystem the
runs use (harness/storage.py), with fewer retries and short timeouts. On failure it raises StorageError
with one line that names the URI and the cause (no credentials, no such bucket, access denied, endpoint
unreachable), never a secret, within about 30 s.
``check_inputs`` refuses, with the field named, a dataset root, Inception weights or Stage-I
checkpoint that is missing or unreadable: otherwise every trial would fail on it, three times each.
``check_ray_address`` refuses a ``RAY_ADDRESS`` where nothing answers: ``ray.init`` would wait for it for minutes.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from urllib.parse import urlparse

from harness import storage
from harness.errors import ConfigError, StorageError

# Preflight's own budget: two attempts with short timeouts keep a dead endpoint's answer under 30 s.
PREFLIGHT_ATTEMPTS, PREFLIGHT_CONNECT_S, PREFLIGHT_REQUEST_S = 2, 5.0, 10.0

# What the AWS SDK (under pyarrow) says -> the cause a user can act on. The first match wins.
_CAUSES = (
    (("NO_SUCH_BUCKET", "NoSuchBucket"), "no such bucket"),
    (("INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId"), "credentials rejected (InvalidAccessKeyId)"),
    (("SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch"), "credentials rejected (SignatureDoesNotMatch)"),
    (("EXPIRED_TOKEN", "ExpiredToken", "InvalidToken"), "credentials rejected (expired or invalid session token)"),
    (("ACCESS_DENIED", "AccessDenied", "HTTP response code: 403"), "access denied"),
    (("NETWORK_CONNECTION", "Could not connect", "curlCode: 7", "curlCode: 28", "Timeout", "timed out"),
     "endpoint unreachable"),
)


def _classify(exc: OSError) -> str:
    text = str(exc)
    for markers, cause in _CAUSES:
        if any(m in text for m in markers):
            return f"{cause} ({storage.s3_endpoint() or 'AWS default'})" if cause == "endpoint unreachable" else cause
    return f"S3 error ({text.splitlines()[0][:200]})"


def _has_credentials() -> bool:
    """Whether the standard AWS credential chain yields a key. pyarrow would otherwise send unsigned
    requests, which an open endpoint accepts and a real one refuses later with a vaguer message."""
    import botocore.session

    return botocore.session.Session().get_credentials() is not None


def preflight(uri: str) -> float:
    """Checks ``uri`` is writable; returns the seconds it took. Raises StorageError naming the cause."""
    t0 = time.perf_counter()
    marker = f".preflight-{uuid.uuid4().hex}"
    if not storage.is_s3(uri):
        try:
            storage.write_bytes(storage.join(uri, marker), b"ok")
            ok = storage.read_bytes(storage.join(uri, marker)) == b"ok"
            os.remove(storage.join(storage.normalize(uri), marker))
        except OSError as exc:
            raise StorageError(f"{uri}: not writable ({exc.strerror or exc})") from exc
        if not ok:
            raise StorageError(f"{uri}: read back differs from what was written")
        return time.perf_counter() - t0
    if not _has_credentials():
        raise StorageError(f"{uri}: storage preflight failed: no credentials found (set AWS_ACCESS_KEY_ID/"
                           "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role)")
    parsed = urlparse(uri)
    path = f"{parsed.netloc}/{parsed.path.strip('/')}/{marker}".replace("//", "/")
    # A fresh filesystem, not the cached one: the preflight must see the current credentials.
    fs = storage.s3_filesystem(PREFLIGHT_ATTEMPTS, PREFLIGHT_CONNECT_S, PREFLIGHT_REQUEST_S)
    try:
        with fs.open_output_stream(path) as f:
            f.write(b"ok")
        with fs.open_input_stream(path) as f:
            body = f.read()
        fs.delete_file(path)
    except OSError as exc:
        raise StorageError(f"{uri}: storage preflight failed: {_classify(exc)}") from None
    if body != b"ok":
        raise StorageError(f"{uri}: storage preflight failed: read back differs from what was written")
    return time.perf_counter() - t0


def check_inputs(data, stage1_checkpoint: str | None = None) -> None:
    """Raises ConfigError naming the field whose file or directory is missing or unreadable.
    ``data`` is the sweep's DataConfig (its ``uri`` and ``inception_weights``)."""
    named = [("data.uri", data.uri), ("data.inception_weights", data.inception_weights),
             ("data.is_classifier", data.is_classifier), ("--stage1-checkpoint", stage1_checkpoint)]
    for field_path, uri in named:
        if uri is None:
            continue
        problem = storage.readable(uri)
        if problem:
            raise ConfigError(f"{field_path}: {uri} {problem}")
    if data.inception_weights:  # a file that is not the standard layout (or TorchScript) is refused before Ray
        from harness.metrics.inception import load_scoring_net

        load_scoring_net(data.inception_weights, "data.inception_weights")
        if data.is_classifier:
            load_scoring_net(data.is_classifier, "data.is_classifier", num_classes=None)
    if stage1_checkpoint is not None:
        from harness.checkpoint import MARKER, is_complete

        if not is_complete(stage1_checkpoint):
            raise ConfigError(f"--stage1-checkpoint: {stage1_checkpoint} is not a complete checkpoint (no {MARKER})")


RAY_PROBE_S = 5.0


def check_ray_address(address: str | None) -> None:
    """Raises ConfigError when ``address`` (RAY_ADDRESS as ``host:port`` or ``ray://host:port``) does not accept a
    connection within RAY_PROBE_S. Any other form (``auto``, ``local``) is Ray's to resolve."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)/?", address or "")
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=RAY_PROBE_S).close()
    except OSError as exc:
        why = "connection refused" if isinstance(exc, ConnectionRefusedError) else (exc.strerror or type(exc).__name__)
        raise ConfigError(f"RAY_ADDRESS: {address} does not answer ({why}); start the cluster (ray start --head) "
                          "or unset RAY_ADDRESS to run on a local Ray") from None


# The database drivers SQLAlchemy loads for a study URL's scheme, and the install that brings each.
_STUDY_DRIVERS = {"postgresql": "psycopg 3: pip install -e '.[postgres]'", "postgres": "psycopg 3",
                  "mysql": "a MySQL driver (pip install PyMySQL, and a mysql+pymysql:// URL)"}
STUDY_CONNECT_S = 5  # the database server's answer: a night waits on it once, before Ray


def check_study(location: str) -> None:
    """Refuses, before Ray starts, an Optuna study database (``--study`` URL) that cannot be used: its driver
    is not installed, its server cannot be reached, or it refuses the login. One line naming ``--study`` (never
    the password). A journal location is left to storage's own preflight; ``sqlite:`` needs no server."""
    import sqlalchemy
    from sqlalchemy import exc as sa_exc

    from harness.mlflow_log import redacted

    scheme, _, driver = location.split(":", 1)[0].partition("+")
    if scheme not in _STUDY_DRIVERS:
        return
    shown = redacted(location)
    # The default drivers (psycopg, mysqlclient) take connect_timeout; another one named in the URL may not.
    connect_args = {} if driver else {"connect_timeout": STUDY_CONNECT_S}
    try:
        engine = sqlalchemy.create_engine(location, connect_args=connect_args)
    except ImportError as exc:  # the dialect imports its driver here
        raise ConfigError(f"--study {shown}: its database driver is not installed ({exc.name or exc}); "
                          f"install {_STUDY_DRIVERS[scheme]}") from None
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as exc:
        raise ConfigError(f"--study {shown}: not a database URL SQLAlchemy can use ({exc})") from None
    try:
        with engine.connect():
            pass
    except sa_exc.DBAPIError as exc:
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise ConfigError(f"--study {shown}: cannot connect ({cause[:300]})") from None
    finally:
        engine.dispose()
