"""Puts the repository root on ``sys.path`` for ``python harness/<script>.py``.

Run that way, Python puts harness/ itself on the path, not the repository root, and ``import harness``
works only where the project is installed (the README's ``pip install -e .``) or where Ray's
``--working-dir`` puts the root on PYTHONPATH. The scripts import this module first, by its bare name,
only when they run as scripts; everything else imports the package normally.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
