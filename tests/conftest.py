"""One torch thread per test process (and for the scripts the tests start): on a 2-core machine
intra-op threads of tiny tensors cost more than they give."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    # The fake accelerator's backend must exist before the first backward pass of the process: the
    # autograd engine sizes its per-device queues once (reproduce/fake_device.py).
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from reproduce.fake_device import install
    install()
    config.addinivalue_line("markers", "device: the fake-accelerator layer (tests/test_fake_device.py): every method on a "
                                       "non-CPU device; `python -m pytest -m device` runs it alone")
    config.addinivalue_line("markers", "slurm: starts a real single-node SLURM (munged, slurmctld, slurmd on localhost; "
                                       "tests/test_slurm.py); skips where slurm-wlm and munge cannot run")
