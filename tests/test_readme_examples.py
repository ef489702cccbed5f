"""The README's "Use one method in your own project" section: one example per method file, and each is
exactly the EXAMPLE that tests/test_lift_<name>.py runs with that method file copied alone into a
folder where `common` cannot be imported. So every README example runs in CI, and a README that drifts
from the tested code fails here."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "methods")) if f.endswith(".py") and f != "__init__.py")


def readme_examples() -> dict[str, str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = text.index("## Use one method in your own project")
    end = text.find("\n## ", start + 3)
    section = text[start:end if end > 0 else None]
    out = {}
    for m in re.finditer(r"^### `methods/(\w+)\.py`.*?^```python\n(.*?)^```", section, flags=re.S | re.M):
        out[m.group(1)] = m.group(2)
    return out


def _example_in_test(name: str) -> str:
    """The EXAMPLE string literal of tests/test_lift_<name>.py, read without importing the test."""
    tree = ast.parse(open(os.path.join(ROOT, "tests", f"test_lift_{name}.py"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "EXAMPLE" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"tests/test_lift_{name}.py has no EXAMPLE")


def test_every_method_file_has_a_readme_example():
    assert sorted(readme_examples()) == METHODS


@pytest.mark.parametrize("name", METHODS)
def test_readme_example_is_the_tested_one(name):
    assert readme_examples()[name].strip() == _example_in_test(name).strip(), \
        f"README example of methods/{name}.py differs from EXAMPLE in tests/test_lift_{name}.py"


@pytest.mark.parametrize("name", METHODS)
def test_copied_file_imports_alone_and_its_command_line_says_it_needs_the_suite(name, tmp_path):
    """Copied alone (no common/ importable), the file imports, and running it as a command is one line
    on stderr and exit status 2, not a traceback."""
    import shutil
    import subprocess
    import sys

    shutil.copy(os.path.join(ROOT, "methods", f"{name}.py"), tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    imp = subprocess.run([sys.executable, "-c", f"import importlib.util, sys; import {name}; "
                          "assert importlib.util.find_spec('common') is None; "
                          "assert not [m for m in sys.modules if m == 'common' or m.startswith('common.')]"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr
    cli = subprocess.run([sys.executable, f"{name}.py", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and "common/" in cli.stderr, cli.stderr
