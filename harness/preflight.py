"""Preflight before Ray starts: the storage URI is writable and every input a sweep names exists.

``preflight`` writes, reads back and deletes a marker object. On failure it raises StorageError with
one line that names the URI and the cause (no credentials, no such bucket, access denied, endpoint
unreachable), never a secret, within about 30 s (short connect/read timeouts, two attempts).
``check_inputs`` refuses, with the field named, a dataset root, Inception weights or Stage-I
checkpoint that is missing or unreadable: otherwise every trial would fail on it, three times each.
"""

from __future__ import annotations

import os
import time
import uuid
from urllib.parse import urlparse

from harness import storage
from harness.errors import ConfigError, StorageError


def _s3_client():
    import boto3
    from botocore.config import Config

    cfg = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    # A fresh session: boto3's default one caches credentials, and preflight must see the current chain.
    return boto3.session.Session().client("s3", endpoint_url=storage.s3_endpoint(), config=cfg,
                        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def _classify(exc: Exception) -> str:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "no credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role)"
    if isinstance(exc, EndpointConnectionError) or "Could not connect" in str(exc) or "timed out" in str(exc).lower():
        return f"endpoint unreachable ({storage.s3_endpoint() or 'AWS default'})"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            return "no such bucket"
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return "access denied"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            return f"credentials rejected ({code})"
        return f"S3 error {code or 'unknown'}"
    return f"{type(exc).__name__}"


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
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, f"{parsed.path.strip('/')}/{marker}".lstrip("/")
    try:
        client = _s3_client()
        client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        client.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 -- every failure becomes one named cause
        raise StorageError(f"{uri}: storage preflight failed: {_classify(exc)}") from None
    if body != b"ok":
        raise StorageError(f"{uri}: storage preflight failed: read back differs from what was written")
    return time.perf_counter() - t0


def check_inputs(data, stage1_checkpoint: str | None = None) -> None:
    """Raises ConfigError naming the field whose file or directory is missing or unreadable.
    ``data`` is the sweep's DataConfig (its ``uri`` and ``inception_weights``)."""
    named = [("data.uri", data.uri), ("data.inception_weights", data.inception_weights),
             ("--stage1-checkpoint", stage1_checkpoint)]
    for field_path, uri in named:
        if uri is None:
            continue
        problem = storage.readable(uri)
        if problem:
            raise ConfigError(f"{field_path}: {uri} {problem}")
    if stage1_checkpoint is not None:
        from harness.checkpoint import MARKER, is_complete

        if not is_complete(stage1_checkpoint):
            raise ConfigError(f"--stage1-checkpoint: {stage1_checkpoint} is not a complete checkpoint (no {MARKER})")
