"""One storage URI everywhere: a local path or ``s3://bucket/prefix``.

S3-compatible endpoints (AWS S3, MinIO, Ceph RGW, R2) are configured only through the standard
AWS settings: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, the credentials chain and the region.
Credentials are never passed around in configs: pyarrow and boto3 read them from the environment.

Every S3 operation here retries transient failures (endpoint unreachable, timeouts, 5xx, throttling)
with exponential backoff for about 25 s, so a short outage only pauses the run; after that the
error is a StorageError and the trial fails cleanly (``tune.py --resume`` continues it later).
Ray does not retry its own uploads, and pyarrow's retry strategy is lost when a filesystem is
pickled to a worker (docs/DESIGN.md), so the retries live here.
"""

from __future__ import annotations

import os
import posixpath
import time
from urllib.parse import urlparse

import pyarrow.fs as pafs

from harness.errors import StorageError

# Substrings of the errors pyarrow's S3 filesystem raises for failures worth retrying.
TRANSIENT_MARKERS = ("NETWORK_CONNECTION", "Couldn't connect", "Connection refused", "timed out", "Timeout",
                     "SERVICE_UNAVAILABLE", "SLOW_DOWN", "INTERNAL_FAILURE", "Connection reset", "curlCode",
                     "HTTP response code: 5", "THROTTLING")
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 8.0)  # about 25 s in all


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) \
        and any(m in str(exc) for m in TRANSIENT_MARKERS)


def _retrying(uri: str, what: str, fn):
    """Runs ``fn()``; on S3, retries transient failures, then raises StorageError naming the URI."""
    if not is_s3(uri):
        return fn()
    for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
        try:
            return fn()
        except OSError as exc:
            if not is_transient(exc):
                raise
            if delay is None:
                raise StorageError(f"{uri}: {what} failed after {attempt + 1} attempts: {exc}") from exc
            print(f"storage: {what} {uri}: {str(exc).splitlines()[0][:160]}; retrying in {delay:g} s", flush=True)
            time.sleep(delay)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def add_endpoint_argument(parser) -> None:
    parser.add_argument("--s3-endpoint", metavar="URL",
                        help="S3-compatible endpoint (MinIO, Ceph RGW, R2...); default: AWS_ENDPOINT_URL(_S3) or AWS")


def use_endpoint(url: str | None) -> None:
    """``--s3-endpoint``: the same as setting AWS_ENDPOINT_URL_S3 for this process and the Ray processes it starts."""
    if url:
        os.environ["AWS_ENDPOINT_URL_S3"] = url


def endpoint_env() -> dict[str, str]:
    """The endpoint variables (not secret) that trials on other nodes need to reach the same storage."""
    return {k: os.environ[k] for k in ENDPOINT_ENV_VARS if os.environ.get(k)}


def normalize(uri: str) -> str:
    """An absolute local path, or the s3:// URI unchanged: processes on other directories agree on it."""
    return uri if is_s3(uri) else os.path.abspath(uri.removeprefix("file://"))


def join(uri: str, *parts: str) -> str:
    if is_s3(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """URI -> (pyarrow filesystem, path inside it)."""
    if is_s3(uri):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StorageError(f"{uri}: an s3:// URI needs a bucket name")
        endpoint = s3_endpoint()
        kwargs = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
        if endpoint:
            kwargs["endpoint_override"] = endpoint
            if endpoint.startswith("http://"):
                kwargs["scheme"] = "http"
        return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"{uri}: unsupported storage URI (use a local path or s3://bucket/prefix)")
    return pafs.LocalFileSystem(), normalize(uri)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return _retrying(uri, "stat", lambda: fs.get_file_info(path).type != pafs.FileType.NotFound)


def readable(uri: str) -> str | None:
    """None when ``uri`` is a file whose first byte can be read (a directory: when it exists),
    else why not, in a few words."""
    fs, path = filesystem(uri)
    info = _retrying(uri, "stat", lambda: fs.get_file_info(path))
    if info.type == pafs.FileType.NotFound:
        return "does not exist"
    if info.type == pafs.FileType.Directory:
        return None
    try:
        _retrying(uri, "read", lambda: fs.open_input_stream(path).read(1))
    except (PermissionError, OSError) as exc:
        return f"is not readable ({getattr(exc, 'strerror', None) or exc})"
    return None


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)

    def read():
        with fs.open_input_stream(path) as f:
            return f.read()

    try:
        return _retrying(uri, "read", read)
    except FileNotFoundError as exc:
        raise StorageError(f"{uri}: no such file") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Writes a whole object; on a local path through a temporary file so readers never see half of it."""
    fs, path = filesystem(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(posixpath.dirname(path), recursive=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        os.replace(tmp, path)
        return

    def upload():
        with fs.open_output_stream(path) as f:  # an S3 object appears only when the upload completes
            f.write(data)

    _retrying(uri, "write", upload)


def delete(uri: str) -> None:
    """Deletes a file, or a directory with everything under it; nothing there is fine."""
    fs, path = filesystem(uri)

    def remove():
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)

    _retrying(uri, "delete", remove)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Sorted URIs of the files directly under ``uri`` whose names end with ``suffix``."""
    return [join(uri, n) for n in list_names(uri, pafs.FileType.File) if n.endswith(suffix)]


def list_names(uri: str, kind: pafs.FileType) -> list[str]:
    """Sorted names of the entries of type ``kind`` (File or Directory) directly under ``uri``."""
    fs, path = filesystem(uri)
    infos = _retrying(uri, "list", lambda: fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == kind)
