"""cluster/ manifests: the launcher YAML against Ray's autoscaler schema, the KubeRay manifests against
the KubeRay v1.7.0 CRD schemas vendored in cluster/crds/ (public schema files), plus reviewer checks."""

from __future__ import annotations

import json
import pathlib
import re

import jsonschema
import pytest
import ray
import yaml

from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"
CRDS = ROOT / "cluster" / "crds"
IMAGE_TAG = re.compile(r"^[\w./-]+:[\w.-]+$")


def _crd_schema(kind: str) -> dict:
    assert CRDS.is_dir(), f"KubeRay CRDs not found at {CRDS}: they are vendored in the repository"
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd.get("spec", {}).get("names", {}).get("kind") == kind:
            version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
            return version["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind} in {CRDS}")


def _strip_k8s_extensions(schema):
    """OpenAPI v3 extensions (x-kubernetes-*) are not JSON Schema; int-or-string needs both types.

    The API server prunes (kubectl --validate=strict: rejects) fields a structural schema does not
    declare, so objects with declared properties get ``additionalProperties: false`` here: a field
    in the wrong place fails the test instead of vanishing silently on the cluster.
    """
    if isinstance(schema, dict):
        out = {k: _strip_k8s_extensions(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if schema.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strip_k8s_extensions(v) for v in schema]
    return schema


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_launcher_config_matches_the_autoscaler_schema():
    schema = json.loads((pathlib.Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["docker"]["image"].endswith(":" + ray.__version__ + "-py311-gpu"), "image pinned to our Ray"
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and config["idle_timeout_minutes"] > 0
    for node in config["available_node_types"].values():
        assert "IamInstanceProfile" in node["node_config"], "S3 through an instance profile, not keys"
    text = (CLUSTER / "aws.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "--dashboard-host=127.0.0.1" in text
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key] if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts), starts
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token", "every node gets the token"
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"]), "clients on the nodes too"


@pytest.mark.parametrize("path,kind", [("kuberay/raycluster.yaml", "RayCluster"), ("kuberay/rayjob-sweep.yaml", "RayJob"),
                                       ("kuberay/raycronjob-nightly.yaml", "RayCronJob")])
def test_kuberay_manifests_match_the_crds(path, kind):
    manifest = yaml.safe_load((CLUSTER / path).read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == kind
    jsonschema.validate(manifest, _strip_k8s_extensions(_crd_schema(kind)))


def test_raycluster_autoscales_a_gpu_group_from_zero_with_pinned_images_and_auth():
    spec = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == ray.__version__
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", "no dashboard open to the world"
    gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        for c in _containers(template):
            assert IMAGE_TAG.match(c["image"]) and not c["image"].endswith(":latest"), c["image"]
            env = {e["name"]: e for e in c.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    for c in _containers(gpu["template"]):
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_rayjob_entrypoint_is_the_readme_command():
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-sweep.yaml").read_text())["spec"]
    assert job["entrypoint"].startswith("python harness/tune.py --sweep search_spaces/")
    readme = (ROOT / "README.md").read_text()
    assert "-- python harness/tune.py --sweep" in readme
    sweep_file = job["entrypoint"].split("--sweep ")[1].split()[0]
    assert (ROOT / sweep_file).exists()


def test_no_credentials_in_cluster_files():
    for path in CLUSTER.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"AKIA[0-9A-Z]{16}", text) and "aws_secret_access_key" not in text.lower(), path


def _daily_interval_seconds(schedule: str) -> int:
    minute, hour, *rest = schedule.split()
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"], f"expected a daily schedule: {schedule}"
    return 24 * 3600


def _budget_seconds(entrypoint: list[str]) -> float:
    return float(entrypoint[entrypoint.index("--budget-hours") + 1]) * 3600


def test_plain_cronjob_is_a_valid_kubernetes_cronjob():
    import kubernetes_validate

    manifest = yaml.safe_load((CLUSTER / "kuberay" / "cronjob-nightly.yaml").read_text())
    kubernetes_validate.validate(manifest, "1.31.0", strict=True)  # strict: unknown fields are errors


def test_nightly_schedules_run_the_readme_command_and_never_overlap():
    cron = yaml.safe_load((CLUSTER / "kuberay" / "raycronjob-nightly.yaml").read_text())["spec"]
    plain = yaml.safe_load((CLUSTER / "kuberay" / "cronjob-nightly.yaml").read_text())["spec"]
    job = cron["jobTemplate"]
    command = _containers(plain["jobTemplate"]["spec"]["template"])[0]["command"]
    assert command[:3] == ["ray", "job", "submit"]
    submitted = command[command.index("--") + 1:]
    assert job["entrypoint"].split() == submitted, "both schedules run the same nightly command"
    assert submitted[:2] == ["python", "harness/nightly.py"] and (ROOT / submitted[submitted.index("--sweep") + 1]).exists()
    docs = (CLUSTER / "README.md").read_text() + (ROOT / "README.md").read_text()
    assert "-- " + job["entrypoint"] in docs, "the README shows the scheduled command"
    # RayCronJob has no concurrency policy: the RayJob's deadline must end a night before the next starts,
    # and must leave the sweep its budget.
    interval = _daily_interval_seconds(cron["schedule"])
    assert _budget_seconds(submitted) < job["activeDeadlineSeconds"] < interval
    assert _daily_interval_seconds(plain["schedule"]) == interval and plain["concurrencyPolicy"] == "Forbid"
    assert _budget_seconds(submitted) < plain["jobTemplate"]["spec"]["activeDeadlineSeconds"] < interval
    assert job["clusterSelector"]["ray.io/cluster"] == yaml.safe_load(
        (CLUSTER / "kuberay" / "raycluster.yaml").read_text())["metadata"]["name"]
    assert "stackgan-sweeps-head-svc:8265" in " ".join(command)
    for template in (job["submitterPodTemplate"], plain["jobTemplate"]["spec"]["template"]):
        for c in _containers(template):
            assert IMAGE_TAG.match(c["image"]) and not c["image"].endswith(":latest"), c["image"]
            env = {e["name"]: e for e in c.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]


def test_dockerfile_pins_the_ray_image_and_installs_with_the_constraints():
    text = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in text
    assert "pip install --no-cache-dir -q -c constraints.txt -e ." in text
    manifests = "".join(p.read_text() for p in (CLUSTER / "kuberay").glob("*.yaml"))
    assert "working_dir: /home/ray/stackgan" in manifests and "WORKDIR /home/ray/stackgan" in text


# Ray's logical resources of the instance types the launcher config names (its GPU node type leaves
# them to detection). A new instance type must be added here, with its vCPUs and GPUs.
INSTANCE_RESOURCES = {"m6i.2xlarge": {"CPU": 8}, "g5.2xlarge": {"CPU": 8, "GPU": 1}}


def _launcher_nodes() -> list[dict]:
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    nodes = []
    for name, node_type in config["available_node_types"].items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in INSTANCE_RESOURCES, f"aws.yaml {name}: add {instance}'s resources to INSTANCE_RESOURCES"
        offered = {**INSTANCE_RESOURCES[instance], **node_type.get("resources", {})}
        count = 1 if name == config["head_node_type"] else node_type["max_workers"]
        nodes += [dict(offered) for _ in range(count)]
    return nodes


def _kuberay_nodes() -> list[dict]:
    spec = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())["spec"]

    def offered(group: dict) -> dict:
        limits = _containers(group["template"])[0]["resources"]["limits"]
        cpus = float(group["rayStartParams"].get("num-cpus", limits["cpu"]))
        return {"CPU": cpus, **({"GPU": float(limits["nvidia.com/gpu"])} if "nvidia.com/gpu" in limits else {})}

    nodes = [offered(spec["headGroupSpec"])]
    for group in spec["workerGroupSpecs"]:
        nodes += [offered(group) for _ in range(group["maxReplicas"])]
    return nodes


def _trials_at_once(resources, nodes: list[dict]) -> int:
    """Places whole trials (the trial's own bundle, then each Train worker's) first-fit on the nodes
    at their autoscaled maximum, until one no longer fits. Logical resources, as Ray schedules them."""
    from harness.searcher import trial_resources

    free = [dict(n) for n in nodes]
    bundles = [trial_resources(resources)] + ([resources.per_worker()] * resources.workers)
    trials = 0
    while True:
        trial_free = [dict(n) for n in free]
        for bundle in bundles:
            node = next((n for n in trial_free if all(n.get(k, 0) >= v - 1e-9 for k, v in bundle.items())), None)
            if node is None:
                return trials
            for k, v in bundle.items():
                node[k] -= v
        free, trials = trial_free, trials + 1


@pytest.mark.parametrize("sweep_file", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("cluster", ["aws.yaml", "kuberay/raycluster.yaml"])
def test_every_shipped_sweep_fits_every_shipped_cluster_without_idle_gpus(sweep_file, cluster, capsys):
    from harness.config import load_sweep

    resources = load_sweep(str(sweep_file)).resources
    nodes = _launcher_nodes() if cluster == "aws.yaml" else _kuberay_nodes()
    trials = _trials_at_once(resources, nodes)
    gpus = sum(n.get("GPU", 0) for n in nodes)
    used = trials * max(1, resources.workers) * resources.gpus_per_worker
    with capsys.disabled():
        print(f"\n  {sweep_file.name} on {cluster}: {trials} trials at once, {used:g} of {gpus:g} GPUs busy")
    assert trials >= 1, f"{sweep_file.name}: not one trial fits {cluster}"
    if resources.gpus_per_worker:
        assert used == gpus, f"{sweep_file.name} on {cluster}: {gpus - used:g} GPUs idle with {trials} trials at once"
