"""Shared by tests/test_lift_*.py: run code in a folder that holds only the copied files, where the suite's
`common` cannot be imported (no PYTHONPATH, cwd = that folder, and an explicit check)."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_alone(folder, files, code: str) -> subprocess.CompletedProcess:
    """Copy `files` (paths under the repository root) into `folder`, run `code` there with sys.executable."""
    for f in files:
        shutil.copy(os.path.join(ROOT, f), folder)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    check = "import importlib.util; assert importlib.util.find_spec('common') is None, 'common is importable'; "
    return subprocess.run([sys.executable, "-c", check + code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)


def run_example(folder, files, example: str) -> subprocess.CompletedProcess:
    """Write `example` (a README example, at most 32 lines) to folder/example.py and run it next to `files`."""
    assert len(example.strip().splitlines()) <= 32, "README examples stay short"
    with open(os.path.join(folder, "example.py"), "w") as fh:
        fh.write(example)
    return run_alone(folder, files, "import runpy; runpy.run_path('example.py', run_name='__main__'); print('example ok')")
