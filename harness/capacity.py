"""What the Ray cluster can hold, now and once its autoscaler has grown it: sizes a sweep before it starts.

Node types come from the cluster config the autoscaler reports to the GCS (autoscaler v2, which
KubeRay runs). The v1 autoscaler of `ray up` / `ray start --autoscaling-config` reports no node
types; when one runs, a resource no node offers yet may still arrive, so it is not refused, and
concurrency follows what the nodes hold now unless the sweep says (search.max_concurrent).

Right after a cluster starts, its autoscaler may not have reported yet (it reports every few
seconds). A resource no node offers is therefore refused only once a report exists, or after
AUTOSCALER_REPORT_WAIT_S without one: a sweep submitted at start-up is not refused by a race.
"""

from __future__ import annotations

import sys
import time

import ray

from harness import ray_compat
from harness.config import ResourcesConfig
from harness.errors import ConfigError

AUTOSCALER_REPORT_WAIT_S = 60.0  # Ray's monitor reports every 5 s; a slow head start takes longer


def _node_type_mapping() -> dict[str, str]:
    """{node ip: node type} from the autoscaler's report; empty before its first report of nodes."""
    report = (ray_compat.autoscaler_status() or {}).get("autoscaler_report") or {}
    return dict(report.get("node_type_mapping") or {})


def autoscaler_can_add_nodes() -> bool:
    """True when an autoscaler with node types of its own runs (not the read-only one of a plain
    ``ray.init()`` / ``ray start`` cluster, whose node types are the nodes themselves)."""
    mapping = _node_type_mapping()
    return any(not ray_compat.is_read_only_node_type(node_id, node_type) for node_id, node_type in mapping.items())


def _wait_for_autoscaler_report(wait_s: float) -> None:
    """Returns once the autoscaler has reported node types or its nodes, or after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while not (ray_compat.reported_node_groups() or _node_type_mapping()) and time.monotonic() < deadline:
        time.sleep(1.0)


def _missing(resources: ResourcesConfig, offered: list[dict]) -> dict[str, tuple[float, float]]:
    """{resource: (per worker, most any node offers)} for what no offer covers."""
    best = {name: max((n.get(name, 0) for n in offered), default=0) for name in resources.per_worker()}
    return {name: (amount, best[name]) for name, amount in resources.per_worker().items() if best[name] < amount}


def _offers(groups: list[dict]) -> list[dict]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")] + [g["resources"] for g in groups]


def check_cluster_fits(resources: ResourcesConfig, wait_s: float = AUTOSCALER_REPORT_WAIT_S) -> None:
    """Rejects per-worker resources that no node has and no known node type can bring (the trial
    would wait forever). Waits up to ``wait_s`` for an autoscaler that has not reported yet."""
    groups = ray_compat.reported_node_groups()
    if _missing(resources, _offers(groups)) and not (groups or _node_type_mapping()):
        print(f"note: waiting up to {wait_s:.0f} s for the autoscaler's first report", flush=True)
        _wait_for_autoscaler_report(wait_s)
        groups = ray_compat.reported_node_groups()
    for name, (amount, best) in _missing(resources, _offers(groups)).items():
        if not groups and autoscaler_can_add_nodes():
            print(f"note: no node offers {amount} {name} yet; the autoscaler is trusted to add one", flush=True)
            continue
        field = {"CPU": "cpus_per_worker", "GPU": "gpus_per_worker"}.get(name, f"custom_resources_per_worker.{name}")
        raise ConfigError(f"resources.{field}: {amount} {name} per worker, but no node offers more than {best}")


def cluster_capacity() -> dict[str, float]:
    """Total resources now, or the most the autoscaler's node types can reach when they are known."""
    total = dict(ray.cluster_resources())
    grown: dict[str, float] = {}
    for group in ray_compat.reported_node_groups():
        count = group["max_count"] if group["max_count"] >= 0 else sys.maxsize
        for name, amount in group["resources"].items():
            grown[name] = grown.get(name, 0) + amount * count
    for name, amount in grown.items():
        total[name] = max(total.get(name, 0), amount)
    return total
