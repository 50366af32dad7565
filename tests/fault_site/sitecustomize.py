"""Start-up of a test's training subprocess: installs its injected fault (tests/faults.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests import faults  # noqa: E402  pylint: disable=g-import-not-at-top

faults.install()
