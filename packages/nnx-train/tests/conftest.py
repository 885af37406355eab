"""Make `nnx_train_testlib` (tiny interface, data and subprocess runner) importable by the tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
