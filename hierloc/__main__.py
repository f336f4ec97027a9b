"""Entry point: `python -m hierloc --help`."""

import os
import sys

# as app.py: PyTorch's OpenMP threads do not busy-wait (ONNX Runtime shares the cores)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hierloc.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
