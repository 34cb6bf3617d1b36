"""One storage URI everywhere: a local path or ``s3://bucket/prefix``.

S3-compatible endpoints (AWS S3, MinIO, Ceph RGW, R2) are configured only through the standard
AWS settings: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, the credentials chain and the region.
Credentials are never passed around in configs: pyarrow reads them from the environment.

Transient S3 failures (endpoint unreachable, timeouts, 5xx, throttling) are retried by pyarrow's own
AWS retry strategy (``AwsDefaultS3RetryStrategy``: 25 ms x 2^k between attempts, about 25 s over 10
attempts), so a short outage only pauses the run; an error left after that becomes a StorageError
naming the URI, and the trial fails cleanly (``tune.py --resume`` continues it later). One filesystem
is kept per endpoint and region in each process. Ray's own uploads do not retry, and a filesystem
pickled to a worker loses its retry strategy (docs/DESIGN.md), so every process builds its own here.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import os
import posixpath
from urllib.parse import urlparse

import pyarrow.fs as pafs

from harness.errors import StorageError

RETRY_ATTEMPTS = 10  # 25 ms x 2^k between attempts: about 25 s of retrying before an error is final
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 60.0  # one request: a multipart upload sends its parts as separate requests


def s3_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3_filesystem(attempts: int = RETRY_ATTEMPTS, connect_timeout: float = CONNECT_TIMEOUT_S,
                  request_timeout: float = REQUEST_TIMEOUT_S) -> pafs.S3FileSystem:
    """A new pyarrow S3 filesystem for the current endpoint, region and credentials."""
    return _new_s3(s3_endpoint(), s3_region(), attempts, connect_timeout, request_timeout)


def _new_s3(endpoint: str | None, region: str, attempts: int, connect_timeout: float,
            request_timeout: float) -> pafs.S3FileSystem:
    kwargs = {"region": region, "retry_strategy": pafs.AwsDefaultS3RetryStrategy(max_attempts=attempts),
              "connect_timeout": connect_timeout, "request_timeout": request_timeout}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=8)
def _cached_s3(endpoint: str | None, region: str) -> pafs.S3FileSystem:
    """The runs' filesystem: one per endpoint and region in each process."""
    return _new_s3(endpoint, region, RETRY_ATTEMPTS, CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S)


def _s3_errors(uri: str, what: str, fn):
    """Runs ``fn()``; on S3, an error pyarrow still raises after its retries becomes a StorageError."""
    if not is_s3(uri):
        return fn()
    try:
        return fn()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"{uri}: {what} failed: {str(exc).splitlines()[0][:300]}") from exc


class PreconditionFailed(StorageError):
    """A conditional write or delete found the object changed since the ETag given (or present, for create-only)."""


@dataclasses.dataclass(frozen=True)
class Versioned:
    """An S3 object as a conditional write needs it: its bytes and ETag (None, None when absent) and its age, the
    seconds since it was last written by the endpoint's own clock (no clock of this machine is compared)."""

    data: bytes | None
    etag: str | None
    age_s: float | None


@functools.lru_cache(maxsize=8)
def _boto_client(endpoint: str | None, region: str):
    """boto3 for what pyarrow cannot do (conditional requests), with the same endpoint, region, credentials chain
    and a retry budget like pyarrow's."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": RETRY_ATTEMPTS}, connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=REQUEST_TIMEOUT_S)
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _conditional(uri: str, what: str, fn):
    """Runs the boto3 call ``fn(client, bucket, key)``: 412 (and 409, a conditional write racing another) is
    PreconditionFailed, anything left after the retries a StorageError naming the URI."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not is_s3(uri):
        raise ValueError(f"{uri}: conditional requests are for s3:// objects")
    parsed = urlparse(uri)
    try:
        return fn(_boto_client(s3_endpoint(), s3_region()), parsed.netloc, parsed.path.lstrip("/"))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            raise PreconditionFailed(f"{uri}: {what}: the object changed meanwhile") from exc
        raise StorageError(f"{uri}: {what} failed: {code or status}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{uri}: {what} failed: {str(exc).splitlines()[0][:300]}") from exc


def read_versioned(uri: str) -> Versioned:
    from botocore.exceptions import ClientError

    def get(client, bucket, key):
        try:
            r = client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return Versioned(None, None, None)
            raise
        now = email.utils.parsedate_to_datetime(r["ResponseMetadata"]["HTTPHeaders"]["date"])
        return Versioned(r["Body"].read(), r["ETag"], max(0.0, (now - r["LastModified"]).total_seconds()))

    return _conditional(uri, "read", get)


def write_if(uri: str, data: bytes, etag: str | None) -> str:
    """Writes ``uri`` only if it still has ``etag`` (None: only if it does not exist); returns the new ETag.
    Raises PreconditionFailed otherwise, having written nothing."""
    condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
    return _conditional(uri, "conditional write",
                        lambda c, b, k: c.put_object(Bucket=b, Key=k, Body=data, **condition)["ETag"])


def delete_if(uri: str, etag: str) -> None:
    """Deletes ``uri`` only if it still has ``etag``; PreconditionFailed otherwise."""
    _conditional(uri, "conditional delete", lambda c, b, k: c.delete_object(Bucket=b, Key=k, IfMatch=etag))


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
        fs = _cached_s3(s3_endpoint(), s3_region())
        return fs, f"{parsed.netloc}{parsed.path}".rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"{uri}: unsupported storage URI (use a local path or s3://bucket/prefix)")
    return pafs.LocalFileSystem(), normalize(uri)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return _s3_errors(uri, "stat", lambda: fs.get_file_info(path).type != pafs.FileType.NotFound)


def readable(uri: str) -> str | None:
    """None when ``uri`` is a file whose first byte can be read (a directory: when it exists),
    else why not, in a few words."""
    fs, path = filesystem(uri)
    info = _s3_errors(uri, "stat", lambda: fs.get_file_info(path))
    if info.type == pafs.FileType.NotFound:
        return "does not exist"
    if info.type == pafs.FileType.Directory:
        return None
    try:
        _s3_errors(uri, "read", lambda: fs.open_input_stream(path).read(1))
    except (OSError, StorageError) as exc:
        return f"is not readable ({getattr(exc, 'strerror', None) or exc})"
    return None


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)

    def read():
        with fs.open_input_stream(path) as f:
            return f.read()

    try:
        return _s3_errors(uri, "read", read)
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

    _s3_errors(uri, "write", upload)


def delete(uri: str) -> None:
    """Deletes a file, or a directory with everything under it; nothing there is fine."""
    fs, path = filesystem(uri)

    def remove():
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)

    _s3_errors(uri, "delete", remove)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Sorted URIs of the files directly under ``uri`` whose names end with ``suffix``."""
    return [join(uri, n) for n in list_names(uri, pafs.FileType.File) if n.endswith(suffix)]


def list_names(uri: str, kind: pafs.FileType) -> list[str]:
    """Sorted names of the entries of type ``kind`` (File or Directory) directly under ``uri``."""
    fs, path = filesystem(uri)
    infos = _s3_errors(uri, "list", lambda: fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == kind)
