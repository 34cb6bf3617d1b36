"""Storage preflight: before any trial, prove the storage URI is reachable and writable.

Writes, reads back and deletes a marker object. On failure raises StorageError with one line that
names the URI and the cause (no credentials, no such bucket, access denied, endpoint unreachable),
never a secret, within about 30 s (short connect/read timeouts, two attempts).
"""

from __future__ import annotations

import os
import time
import uuid
from urllib.parse import urlparse

from harness import storage
from harness.errors import StorageError


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
