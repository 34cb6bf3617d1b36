"""What the Ray cluster can hold, now and once its autoscaler has grown it: sizes a sweep before it starts.

Node types come from the cluster config the autoscaler reports to the GCS (autoscaler v2, which
KubeRay runs). The v1 autoscaler of `ray up` / `ray start --autoscaling-config` reports no node
types; when one runs, a resource no node offers yet may still arrive, so it is not refused, and
concurrency follows what the nodes hold now unless the sweep says (search.max_concurrent).
"""

from __future__ import annotations

import json
import sys

import ray

from harness.config import ResourcesConfig
from harness.errors import ConfigError


def _node_groups() -> list[dict]:
    """[{"resources": {...}, "max_count": n}] from the reported cluster config ([] when none is)."""
    config = ray._private.state.state.get_cluster_config()
    if config is None:
        return []
    return [{"resources": dict(g.resources), "max_count": g.max_count} for g in config.node_group_configs]


def autoscaler_can_add_nodes() -> bool:
    """True when an autoscaler with node types of its own runs (not the read-only one of a plain
    ``ray.init()`` / ``ray start`` cluster, whose node types are the nodes themselves)."""
    from ray._private import ray_constants
    from ray.autoscaler._private.util import format_readonly_node_type
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return False
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    try:
        mapping = json.loads(status)["autoscaler_report"]["node_type_mapping"] if status else {}
    except (ValueError, KeyError, TypeError):
        return False
    return any(node_type != format_readonly_node_type(node_id) for node_id, node_type in mapping.items())


def check_cluster_fits(resources: ResourcesConfig) -> None:
    """Rejects per-worker resources that no node has and no known node type can bring (the trial
    would wait forever)."""
    groups = _node_groups()
    offered = [n["Resources"] for n in ray.nodes() if n.get("Alive")] + [g["resources"] for g in groups]
    for name, amount in resources.per_worker().items():
        best = max((n.get(name, 0) for n in offered), default=0)
        if best >= amount:
            continue
        if not groups and autoscaler_can_add_nodes():
            print(f"note: no node offers {amount} {name} yet; the autoscaler is trusted to add one", flush=True)
            continue
        field = {"CPU": "cpus_per_worker", "GPU": "gpus_per_worker"}.get(name, f"custom_resources_per_worker.{name}")
        raise ConfigError(f"resources.{field}: {amount} {name} per worker, but no node offers more than {best}")


def cluster_capacity() -> dict[str, float]:
    """Total resources now, or the most the autoscaler's node types can reach when they are known."""
    total = dict(ray.cluster_resources())
    grown: dict[str, float] = {}
    for group in _node_groups():
        count = group["max_count"] if group["max_count"] >= 0 else sys.maxsize
        for name, amount in group["resources"].items():
            grown[name] = grown.get(name, 0) + amount * count
    for name, amount in grown.items():
        total[name] = max(total.get(name, 0), amount)
    return total
