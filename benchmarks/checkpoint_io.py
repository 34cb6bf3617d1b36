"""Checkpoint upload to S3-compatible storage: our path against a raw boto3 multipart upload.

    AWS_ENDPOINT_URL=http://127.0.0.1:5000 python benchmarks/checkpoint_io.py --bucket B [--profiles paper,small]
                                                                             [--repeats 3]

For each profile, a real Stage-II checkpoint (the StageLoop's state: both networks, both Adam states
filled, schedulers, RNG): ~1.2 GB for the paper profile. Per repeat it measures
- ours: ``checkpoint.AsyncCheckpointWriter`` as the training worker uses it: ``blocked_s`` is what the
  training loop waits (serialization to memory), ``upload_s`` the time until the checkpoint is complete
  (state.pt, meta.json, marker) on the endpoint; ``state_s`` our write path (``storage.write_bytes``,
  pyarrow's S3 multipart) for the state bytes alone;
- boto3: ``upload_fileobj`` of the same bytes (boto3's default multipart: 8 MB parts, 10 threads).
Prints one JSON object with medians: throughput ratio ours / boto3 (target >= 0.8) and blocked /
upload (target <= 0.1). The endpoint and credentials come from the standard AWS settings; the
bucket must exist. Objects written are deleted after each measurement.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import sys
import time
import uuid

import torch

from benchmarks.step_throughput import _loop
from harness import checkpoint, storage


def stage2_state(profile: str) -> dict:
    """The state a Stage-II checkpoint of ``profile`` holds, with Adam's moments allocated as after a step."""
    loop = _loop(2, profile, "fp32", torch.device("cpu"))
    for opt in (loop.opt_g, loop.opt_d):
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                                "exp_avg_sq": torch.zeros_like(p)}
    return loop.state_dict()


def _delete_prefix(client, bucket: str, prefix: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=o["Key"])


def measure(state: dict, bucket: str, client) -> dict:
    prefix = f"checkpoint-io-bench/{uuid.uuid4().hex[:8]}"
    writer = checkpoint.AsyncCheckpointWriter()
    t0 = time.perf_counter()
    writer.submit(f"s3://{bucket}/{prefix}/ours", 1, state, {"stage": 2, "metrics": {}})
    blocked = writer.blocked_seconds
    writer.wait()
    upload = time.perf_counter() - t0
    writer.close()
    payload = storage.read_bytes(f"s3://{bucket}/{prefix}/ours/checkpoints/epoch-0001/state.pt")
    size = len(payload)

    t0 = time.perf_counter()
    storage.write_bytes(f"s3://{bucket}/{prefix}/ours-state/state.pt", payload)
    state_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    client.upload_fileobj(io.BytesIO(payload), bucket, f"{prefix}/boto3/state.pt")
    boto3_s = time.perf_counter() - t0
    _delete_prefix(client, bucket, prefix)
    return {"bytes": size, "blocked_s": blocked, "upload_s": upload, "state_s": state_s, "boto3_s": boto3_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bucket", required=True, help="an existing bucket on the endpoint")
    p.add_argument("--profiles", default="paper,small")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import boto3

    client = boto3.client("s3", endpoint_url=storage.s3_endpoint())
    torch.set_num_threads(os.cpu_count() or 1)
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "endpoint": storage.s3_endpoint() or "AWS default"},
           "repeats": args.repeats, "profiles": {}}
    for profile in args.profiles.split(","):
        state = stage2_state(profile)
        runs = [measure(state, args.bucket, client) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        mb = med["bytes"] / 1e6
        out["profiles"][profile] = {
            "checkpoint_mb": round(mb, 1),
            "ours_checkpoint_s": round(med["upload_s"], 2),  # submit to complete: serialize, state, meta, marker
            "ours_state_upload_s": round(med["state_s"], 2),  # the same bytes as boto3's below, our write path
            "ours_mb_per_s": round(mb / med["state_s"], 1),
            "boto3_multipart_s": round(med["boto3_s"], 2),
            "boto3_mb_per_s": round(mb / med["boto3_s"], 1),
            "throughput_vs_boto3": round(med["boto3_s"] / med["state_s"], 3),
            "loop_blocked_s": round(med["blocked_s"], 3),
            "blocked_fraction_of_upload": round(med["blocked_s"] / med["upload_s"], 3),
            "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
        }
        del state
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
