"""Packaging tier: a wheel built from the checkout ships the recipes, and after a
non-editable install they resolve by name from any folder."""

import os
import site
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run by the venv's python in a folder outside the checkout.
CHECK = """
import os, sys
import alexnet_tf
from alexnet_tf import ablate
from alexnet_tf.config import Config, load_recipe

venv = os.path.realpath(sys.prefix) + os.sep
for f in (alexnet_tf.__file__, ablate.DEFAULT_RECIPE):
    assert os.path.realpath(f).startswith(venv), f"{f} is not in the venv {venv}"
quick, paper = load_recipe("recipes/quickstart.py"), load_recipe("paper")
assert isinstance(quick, Config) and isinstance(paper, Config)
assert (quick.model.width, paper.model.width) == (0.25, 1.0)
assert load_recipe(ablate.DEFAULT_RECIPE) == quick
print("recipes ok")
"""


def _run(args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_a_wheel_ships_the_recipes_and_they_resolve_after_install(tmp_path):
    # Build from a copy of the checkout's files, so that no build/ folder left there enters the wheel.
    src = tmp_path / "src"
    files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).split("\0")
    for rel in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, rel)):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(open(os.path.join(ROOT, rel), "rb").read())
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", dist], cwd=src)
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"alexnet_tf/recipes/paper.py", "alexnet_tf/recipes/quickstart.py"} <= set(names)
    assert not [n for n in names if n.startswith("recipes/")], "a top-level package named recipes"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if sys.prefix != sys.base_prefix:
        # The tests run in a venv; the new one sees only the base interpreter's packages,
        # so it gets this one's (TensorFlow, pip) after its own.
        purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip()
        lines = [f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages()]
        with open(os.path.join(purelib, "outer-site-packages.pth"), "w") as f:
            f.writelines(lines)
    # --force-reinstall: the checkout's own (editable) install is visible too; it stays as it is.
    _run([python, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", wheel])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "recipes ok" in _run([python, "-c", CHECK], cwd=elsewhere)
    assert "[recipe]" in _run([python, "-m", "alexnet_tf.ablate", "--help"], cwd=elsewhere)
