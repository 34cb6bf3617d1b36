"""Start-up shared by every command (tune, train, nightly, report, data): storage arguments, Ray, and
how an error ends the process.

Exit codes (the README's table is this one):

    0  done
    1  the run ended without a result: nothing to rank, or training failed (run it again to resume)
    2  bad input: a sweep file, an argument, a missing file, unusable storage; one line names it
    3  nightly only: tonight's best is worse than the all-time best beyond seed noise

A user's mistake (HarnessError) prints one line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from harness import REPO_ROOT, storage
from harness.errors import HarnessError, NoResults
from harness.preflight import check_ray_address

EXIT_OK = 0
EXIT_NO_RESULT = 1
EXIT_BAD_INPUT = 2
EXIT_REGRESSION = 3

CREDENTIAL_ENV_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"}


def use_storage_arguments(args) -> None:
    """Applies ``--s3-endpoint`` and makes ``args.storage`` absolute (trial processes run elsewhere)."""
    storage.use_endpoint(args.s3_endpoint)
    if getattr(args, "storage", None):
        args.storage = storage.normalize(args.storage)


def run(command: Callable[[], int]) -> int:
    """Runs ``command`` and maps how it ends to an exit code: bad input (HarnessError) prints one
    line and exits 2, no result (NoResults) prints one line and exits 1; a bug keeps its traceback."""
    try:
        return command()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NoResults as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_RESULT


def keep_credentials_out_of_runtime_env() -> None:
    """Ray Tune copies the driver's AWS key variables into every trial actor's runtime_env, and Ray's
    runtime-env agent writes runtime_envs to its log. Credentials must appear in neither: trials take
    them from their node (environment or instance role), as Ray Train workers already do. Found by the
    secret scan in tests/test_sweep.py. The endpoint is no secret, and remote trials need it."""
    from harness import ray_compat

    ray_compat.keep_env_vars_out_of_trials(drop=CREDENTIAL_ENV_VARS, add=set(storage.ENDPOINT_ENV_VARS))


def start_ray() -> None:
    """Joins the cluster (RAY_ADDRESS, as under `ray job submit`) or starts a local one."""
    import ray

    keep_credentials_out_of_runtime_env()
    if not ray.is_initialized():
        check_ray_address(os.environ.get("RAY_ADDRESS"))  # ray.init would wait minutes for an address where nothing is
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # under `ray job submit`: the entrypoint is told the cluster's address
        else:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": worker_pythonpath(), **storage.endpoint_env()}})


def worker_pythonpath() -> str:
    """The repo first, then whatever PYTHONPATH the driver has (a user's site dir must reach workers too)."""
    return os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)
