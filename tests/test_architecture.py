"""The import rules the design rests on (docs/DESIGN.md): models/ is pure torch, only the Ray-boundary
modules import Ray, private Ray APIs live in one module, and the owners of the sweep's words (objective,
phase, results schema, report) import no Ray."""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The modules that talk to Ray: the sweep (Tune driver) and its trainable, the Train worker and its launcher, the CLI's
# start-up, capacity queries, the MLflow callback and the compatibility layer.
RAY_BOUNDARY = {"harness/capacity.py", "harness/cli.py", "harness/fit.py", "harness/mlflow_log.py", "harness/mlflow_logger.py",
                "harness/ray_compat.py", "harness/searcher.py", "harness/train.py", "harness/trial.py",
                "harness/sweep.py", "harness/worker.py"}
PRIVATE_RAY = "harness/ray_compat.py"  # the one module that may reach into ray._private and friends
RAY_FREE_OWNERS = ("harness/objective.py", "harness/phase.py", "harness/results.py", "harness/confirm.py",
                   "harness/sweep_record.py", "harness/loop.py", "harness/report/", "harness/leaderboard.py",
                   "harness/optuna_space.py", "harness/config.py", "harness/checkpoint.py")


def _imports(path: pathlib.Path) -> set[str]:
    """Every module name ``path`` imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): _imports(p) for p in sorted((ROOT / folder).rglob("*.py"))}


def test_models_import_only_torch_the_standard_library_and_each_other():
    for path, names in _sources("models").items():
        for name in names:
            top = name.split(".")[0]
            assert top in ("torch", "models", "__future__") or top in sys.stdlib_module_names, f"{path} imports {name}"


def _module_path(name: str) -> str | None:
    """harness.report.build -> harness/report/build.py (or a package's __init__.py); None outside the project."""
    base = ROOT / pathlib.Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return str(path.relative_to(ROOT))
    return None


def _reaches_ray(path: str, imports: dict[str, set[str]], seen: set[str]) -> list[str]:
    """The chain of project modules through which ``path`` ends up importing Ray ([] when it does not)."""
    if path in seen:
        return []
    seen.add(path)
    for name in sorted(imports.get(path, ())):
        if name == "ray" or name.startswith("ray."):
            return [path, name]
        inner = _module_path(name)
        # A package's __init__ runs on any import of one of its modules: follow it too.
        parents = [_module_path(".".join(name.split(".")[:i])) for i in range(1, name.count(".") + 1)]
        for target in [inner, *parents]:
            if target and target != path:
                chain = _reaches_ray(target, imports, seen)
                if chain:
                    return [path, *chain]
    return []


def test_the_owners_of_the_sweeps_words_import_no_ray_not_even_through_another_module():
    imports = {**_sources("harness"), **_sources("models")}
    for path in imports:
        if path.startswith(RAY_FREE_OWNERS):
            chain = _reaches_ray(path, imports, set())
            assert not chain, f"{path} imports Ray through {' -> '.join(chain)}"


def test_only_the_ray_boundary_imports_ray_and_only_ray_compat_its_private_apis():
    importing_ray = set()
    for path, names in _sources("harness").items():
        ray_names = {n for n in names if n == "ray" or n.startswith("ray.")}
        if ray_names:
            importing_ray.add(path)
        private = {n for n in ray_names if any(part.startswith("_") for part in n.split("."))}
        assert not private or path == PRIVATE_RAY, f"{path} imports private Ray APIs {sorted(private)}"
    assert importing_ray <= RAY_BOUNDARY, f"outside the Ray boundary: {sorted(importing_ray - RAY_BOUNDARY)}"
    for owner in RAY_FREE_OWNERS:
        assert not any(p.startswith(owner) for p in importing_ray), f"{owner} imports Ray"
