"""The capacity check against an autoscaler that reports late, never, or as a read-only cluster.

Ray is replaced by its answers (nodes, the reported cluster config, the autoscaler's status) so
each timing is exact; the autoscaling test covers the real fake-multinode cluster.
"""

from __future__ import annotations

import json

import pytest

from harness import capacity
from harness.config import ResourcesConfig
from harness.errors import ConfigError
from harness.searcher import max_concurrent_trials

HEAD = [{"Alive": True, "Resources": {"CPU": 1.0}}]
NEEDS_FAKE_GPU = ResourcesConfig(workers=1, cpus_per_worker=1, custom_resources_per_worker={"fake_gpu": 1})


def _status(mapping: dict[str, str]) -> dict:
    return json.loads(json.dumps({"autoscaler_report": {"node_type_mapping": mapping}}))


@pytest.fixture()
def cluster(monkeypatch):
    """A head with 1 CPU whose autoscaler's status the test scripts: ``reports`` is the sequence of
    statuses returned by successive reads (the last one repeats)."""
    state = {"reports": [None], "reads": 0, "sleeps": 0}

    def status():
        state["reads"] += 1
        reports = state["reports"]
        return reports[min(state["reads"] - 1, len(reports) - 1)]

    def sleep(_seconds):
        state["sleeps"] += 1

    monkeypatch.setattr(capacity.ray, "nodes", lambda: HEAD)
    monkeypatch.setattr(capacity.ray_compat, "reported_node_groups", lambda: [])
    monkeypatch.setattr(capacity.ray_compat, "autoscaler_status", status)
    monkeypatch.setattr(capacity.time, "sleep", sleep)
    return state


def test_a_late_autoscaler_report_is_waited_for(cluster):
    # No report for the first 3 reads, then one naming the head as a node type of the cluster config.
    cluster["reports"] = [None, None, None, _status({"127.0.0.1": "ray.head.default"})]
    capacity.check_cluster_fits(NEEDS_FAKE_GPU, wait_s=60)
    # It waited for the report instead of refusing at once. Reads of the status: the first decides to wait, the
    # wait reads twice more (nothing: a sleep after each) and then the report, and the fit check reads it once more.
    assert (cluster["reads"], cluster["sleeps"]) == (5, 2)


def test_no_report_at_all_is_refused_after_the_bound(cluster, monkeypatch):
    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(capacity.time, "monotonic", lambda: next(clock))
    with pytest.raises(ConfigError, match=r"resources\.custom_resources_per_worker\.fake_gpu: 1 fake_gpu per worker"):
        capacity.check_cluster_fits(NEEDS_FAKE_GPU, wait_s=5)
    assert 3 <= cluster["sleeps"] <= 6


def test_a_read_only_cluster_is_refused_without_waiting(cluster):
    from ray.autoscaler._private.util import format_readonly_node_type

    node_id = "ab" * 28  # the read-only provider's "ip" is the node id itself
    cluster["reports"] = [_status({node_id: format_readonly_node_type(node_id)})]
    with pytest.raises(ConfigError, match="no node offers more than 0"):
        capacity.check_cluster_fits(NEEDS_FAKE_GPU, wait_s=60)
    assert cluster["sleeps"] == 0


def test_what_the_nodes_offer_is_never_waited_for(cluster):
    capacity.check_cluster_fits(ResourcesConfig(workers=1, cpus_per_worker=1), wait_s=60)
    assert cluster["reads"] == 0 and cluster["sleeps"] == 0


QUARTER_GPU = ResourcesConfig(workers=0, cpus_per_worker=1, gpus_per_worker=0.25)
GPU_GROUP = {"resources": {"CPU": 8.0, "GPU": 1.0}, "min_count": 0, "max_count": 3}


def test_gpu_fractions_pack_trials_on_the_nodes_there_are(monkeypatch):
    monkeypatch.setattr(capacity.ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}])
    monkeypatch.setattr(capacity.ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    monkeypatch.setattr(capacity.ray_compat, "reported_node_groups", lambda: [])
    capacity.check_cluster_fits(QUARTER_GPU, wait_s=0)
    assert max_concurrent_trials(QUARTER_GPU, capacity.cluster_capacity(), 16) == 4  # 1 / 0.25 on one GPU
    assert QUARTER_GPU.gpus_per_trial == 0.25  # what each trial's GPU-hours are charged at


def test_gpu_fractions_count_against_the_autoscalers_node_types(monkeypatch):
    # A CPU-only head; GPU nodes exist only as an autoscaler node type (up to 3 of them, 1 GPU each).
    monkeypatch.setattr(capacity.ray, "nodes", lambda: HEAD)
    monkeypatch.setattr(capacity.ray, "cluster_resources", lambda: {"CPU": 1.0})
    monkeypatch.setattr(capacity.ray_compat, "reported_node_groups", lambda: [GPU_GROUP])
    capacity.check_cluster_fits(QUARTER_GPU, wait_s=0)
    assert max_concurrent_trials(QUARTER_GPU, capacity.cluster_capacity(), 100) == 12
    # Without the GPU node type nothing can ever hold the fraction: refused, naming the field.
    monkeypatch.setattr(capacity.ray_compat, "reported_node_groups", lambda: [{**GPU_GROUP, "resources": {"CPU": 8.0}}])
    with pytest.raises(ConfigError, match=r"resources\.gpus_per_worker: 0\.25 GPU per worker, but no node offers more than 0"):
        capacity.check_cluster_fits(QUARTER_GPU, wait_s=0)
