"""The sweep harness: Ray Train / Ray Tune / storage around the pure-torch models/ package."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
