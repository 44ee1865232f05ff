"""The package's shape: no import circle, no name whose meaning depends on what was
imported before, commands that filter TensorFlow's start-up lines themselves (importing
the library starts nothing), one owner of a run folder's file names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "alexnet_tf")


def package_modules() -> dict[str, str]:
    """{"alexnet_tf.x.y": path} of every module of the package (packages by their __init__)."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (never executed)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imports_of(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """The package's modules that module `name` imports anywhere in it (at the top or
    inside a function: an import deferred into a function is still a circle)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    skipped = _type_checking_only(tree)
    is_package = path.endswith("__init__.py")
    found = set()

    def add(module: str, attr: str | None = None) -> None:
        if attr and f"{module}.{attr}" in modules:
            found.add(f"{module}.{attr}")
        elif module in modules:
            found.add(module)

    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                add(base, alias.name)
    found.discard(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (a list of modules, the first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    modules = package_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "alexnet_tf.training" in graph["alexnet_tf.train"]  # the walk sees imports inside functions
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_library_imports_no_command():
    """Not even `predict`, the name the library's prediction module had."""
    from alexnet_tf.__main__ import COMMANDS

    modules = package_modules()
    commands = {f"alexnet_tf.{c}" for c in [*COMMANDS, "predict"]} | {"alexnet_tf.cli", "alexnet_tf.__main__"}

    def is_command(name):
        return any(name == c or name.startswith(c + ".") for c in commands)

    for name, path in modules.items():
        if not is_command(name):
            imported = sorted(m for m in imports_of(name, path, modules) if is_command(m))
            assert not imported, f"{name} (library) imports {imported}"


def test_api_names_mean_one_thing_whatever_was_imported_before():
    """`alexnet_tf.NAME` is the same object after every command module was imported (as
    `python -m` or a test imports them), and no API name is a module's name."""
    import pkgutil

    import alexnet_tf
    from alexnet_tf.__main__ import COMMANDS

    modules = {m.name for m in pkgutil.iter_modules(alexnet_tf.__path__)}
    assert not set(alexnet_tf.__all__) & (modules | set(COMMANDS) | {"predict"})
    code = textwrap.dedent(
        f"""
        import importlib
        import alexnet_tf
        before = {{name: getattr(alexnet_tf, name) for name in alexnet_tf.__all__}}
        for command in {sorted(COMMANDS)!r}:
            importlib.import_module("alexnet_tf." + command)
        changed = [name for name in alexnet_tf.__all__ if getattr(alexnet_tf, name) is not before[name]]
        print("changed:", changed)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "changed: []" in run.stdout


# Arguments that get each command past its parser to the library (and TensorFlow).
REACH_THE_LIBRARY = {
    "train": ["--workdir", "w"],
    "evaluate": ["--workdir", "w"],
    "export": ["--workdir", "w", "--out", "o"],
    "serve": ["--workdir", "w"],
    "figures": ["--workdir", "w", "--out", "o"],
    "convert": ["m.caffemodel", "--workdir", "w"],
    "prepare": ["--data", "folder:d", "--out", "o"],
    "stats": ["--data", "folder:d", "--out", "o"],
    "ablate": [],
    "bench": ["input"],
    "predict": ["x.jpg", "--workdir", "w"],
}

# Run as sitecustomize in the command's process: reports whether the stderr filter
# (console.quiet) had started when the command's module was looked up (it must not: the
# package's import starts nothing) and when TensorFlow was first imported (it must), and
# ends the process there, before TensorFlow loads.
WATCH = """
import os, sys

def _filtering():
    console = sys.modules.get("alexnet_tf.console")
    return bool(console is not None and console._installed)

class _Watch:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["WATCHED_COMMAND"] and _filtering():
            os.write(1, b"filter started on import\\n")
            os._exit(3)
        if name == "tensorflow":
            os.write(1, b"tensorflow after quiet\\n" if _filtering() else b"tensorflow before quiet\\n")
            os._exit(0)
        return None

sys.meta_path.insert(0, _Watch())
"""


@pytest.mark.parametrize("command", sorted(REACH_THE_LIBRARY))
def test_a_command_filters_tensorflows_lines_before_it_loads(command, tmp_path):
    from alexnet_tf.__main__ import COMMANDS

    if command not in COMMANDS:
        pytest.skip(f"no {command} command")
    (tmp_path / "sitecustomize.py").write_text(WATCH)
    env = {k: v for k, v in os.environ.items() if k != "ALEXNET_TF_VERBOSE"}
    env.update(PYTHONPATH=str(tmp_path), WATCHED_COMMAND=f"alexnet_tf.{command}")
    args = [sys.executable, "-m", f"alexnet_tf.{command}", *REACH_THE_LIBRARY[command]]
    run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.stdout.strip().endswith("tensorflow after quiet"), (run.stdout[-1000:], run.stderr[-1000:])


def test_every_command_is_watched():
    from alexnet_tf.__main__ import COMMANDS

    assert set(COMMANDS) <= set(REACH_THE_LIBRARY)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_only_the_run_folder_spells_its_file_names():
    """config.json, stats.npz, checkpoints/, ... appear as strings in alexnet_tf.runfolder
    alone (prose in docstrings and messages may name them)."""
    from alexnet_tf import runfolder

    names = {v for k, v in vars(runfolder).items() if k.isupper() and isinstance(v, str)}
    other_layouts = {"assets.extra/classes.json"}  # a SavedModel's class names (exporting.CLASSES_FILE)
    assert {"config.json", "stats.npz", "checkpoints", "train.lock", "history.json"} <= names
    spelled = []
    for name, path in package_modules().items():
        if name == "alexnet_tf.runfolder":
            continue
        with open(path) as f:
            tree = ast.parse(f.read())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                value = node.value
                if value in other_layouts:
                    continue
                if value in names or any(value.endswith(f"/{n}") or value.startswith(f"{n}/") for n in names):
                    spelled.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {value!r}")
    assert not spelled, "use alexnet_tf.runfolder:\n" + "\n".join(spelled)
