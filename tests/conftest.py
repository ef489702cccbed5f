"""One torch thread per test process (and for the scripts the tests start): on a 2-core machine
intra-op threads of tiny tensors cost more than they give."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: starts a real single-node SLURM (munged, slurmctld, slurmd on localhost; "
                                       "tests/test_slurm.py); skips where slurm-wlm and munge cannot run")
