"""Command-line interface: one module per subcommand (see ``main.py``).

The sidecar is designed to score on one core per process (scale out with workers), and
OpenBLAS's thread pool makes numpy's small matmuls slower and noisier on a shared 2-4 core
box, so the CLI pins BLAS to one thread unless the operator sets it. This must run before
numpy is first imported, which is why it lives in the package's ``__init__``.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
