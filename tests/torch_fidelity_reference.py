"""torch-fidelity 0.4.0's InceptionV3 feature extractor, loaded without its package ``__init__``.

The package's ``__init__`` imports torchvision, which does not import beside this project's CPU torch; the
extractor module itself needs only torch and three small modules of its own package. So the package is
put in ``sys.modules`` as an empty namespace over its folder, and only those modules run. torch-fidelity is
installed with ``--no-deps`` (README command 2, .ci/run).
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys
import types

INSTALL = "pip install -c constraints.txt --no-deps torch-fidelity==0.4.0"


def extractor_class():
    if "torch_fidelity" not in sys.modules:
        spec = importlib.util.find_spec("torch_fidelity")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"torch-fidelity is not installed: {INSTALL}")
        folder = pathlib.Path(list(spec.submodule_search_locations)[0])
        package = types.ModuleType("torch_fidelity")
        package.__path__ = [str(folder)]
        sys.modules["torch_fidelity"] = package
    return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3").FeatureExtractorInceptionV3
