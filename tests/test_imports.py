"""The packages' import structure: every module imports on its own, light modules stay free of torch, no modules
of avag_core or avag_ros import each other in a circle (a circle only holds while one of its imports waits inside
a function, and breaks as soon as someone moves it to the top), and avag_core and the tests in tests/core import
nothing of ROS, so that they run where ROS is not (the GPU check runs tests/core there)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("avag_core", "avag_ros")
# Imported by the ROS parameter table, the launch file and the lazy package __init__s: no torch behind them.
TORCH_FREE = ("avag_core", "avag_core.config", "avag_core.errors", "avag_core.checkpoints", "avag_core.cli",
              "avag_core.inference", "avag_core.training", "avag_ros", "avag_ros.parameters")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES under `root`."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_edges(root: Path) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}, from every import statement in the file,
    those inside functions included. `from pkg import name` counts as an import of pkg.name when that is a
    module, else of pkg; relative imports are resolved against the importing module's package."""
    modules = module_files(root)
    edges: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module
                names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                         for alias in node.names]
            else:
                continue
            for name in names:
                if name in modules and name != module:
                    targets.setdefault(name, node.lineno)
        edges[module] = targets
    return edges


def find_circle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None: a depth-first search that stops at the first back edge."""
    finished: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        on_path.add(module)
        for target in sorted(edges.get(module, {})):
            if target in on_path:
                return path[path.index(target):] + [target]
            if target not in finished and (circle := visit(target)):
                return circle
        path.pop()
        on_path.discard(module)
        finished.add(module)
        return None

    for module in sorted(edges):
        if module not in finished and (circle := visit(module)):
            return circle
    return None


def describe_circle(circle: list[str], edges: dict[str, dict[str, int]], root: Path) -> str:
    files = module_files(root)
    steps = [f"{a} -> {b} ({files[a].relative_to(root)}:{edges[a][b]})" for a, b in zip(circle, circle[1:])]
    return "import circle: " + " -> ".join(circle) + "\n  " + "\n  ".join(steps)


def test_the_edge_walker_sees_function_level_and_relative_imports(tmp_path):
    """The walker on a made-up package whose circle closes through a relative import inside a function."""
    package = tmp_path / "avag_core"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "inner" / "__init__.py").write_text("")
    (package / "leaf.py").write_text("import os\n")
    (package / "inner" / "first.py").write_text("from .. import leaf\nfrom .second import helper\n")
    (package / "inner" / "second.py").write_text("def helper():\n    from . import first\n    return first\n")
    edges = import_edges(tmp_path)
    assert edges["avag_core.inner.first"] == {"avag_core.leaf": 1, "avag_core.inner.second": 2}
    assert edges["avag_core.inner.second"] == {"avag_core.inner.first": 2}
    assert find_circle(edges) == ["avag_core.inner.first", "avag_core.inner.second", "avag_core.inner.first"]
    (package / "inner" / "second.py").write_text("def helper():\n    return 1\n")
    assert find_circle(import_edges(tmp_path)) is None


def test_no_modules_import_each_other_in_a_circle():
    edges = import_edges(REPO)
    assert len(edges) > 40 and edges["avag_ros.grounding_node"]  # the walk found the code and its imports
    circle = find_circle(edges)
    assert circle is None, describe_circle(circle, edges, REPO)


# ROS itself, its interface packages and what is built on them; any other `*_msgs` or `*_srvs` package counts too.
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "builtin_interfaces", "launch", "launch_ros",
                "launch_testing", "ament_index_python", "avag_interfaces", "avag_ros", "ros_support"}


def ros_free_files(root: Path) -> list[Path]:
    """avag_core, and the tests that must run without ROS with the conftest they load."""
    return [*sorted((root / "avag_core").rglob("*.py")), root / "tests" / "conftest.py",
            *sorted((root / "tests" / "core").rglob("*.py"))]


def ros_imports(path: Path) -> list[str]:
    """`line: module` for every import statement of `path` that names something of ROS, those inside functions
    included. Relative imports stay within their own package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names
                  if name.split(".")[0] in ROS_PACKAGES or name.split(".")[0].endswith(("_msgs", "_srvs"))]
    return found


def test_the_ros_walker_sees_imports_inside_functions_and_message_packages(tmp_path):
    (tmp_path / "avag_core").mkdir()
    (tmp_path / "tests" / "core").mkdir(parents=True)
    (tmp_path / "tests" / "conftest.py").write_text("import launchpad\nfrom .helpers import rclpy\n")
    (tmp_path / "avag_core" / "leaf.py").write_text("import os\n\ndef later():\n    import rclpy.node\n")
    (tmp_path / "tests" / "core" / "test_x.py").write_text("from avag_ros.data import DEMO_CHECKPOINT\n"
                                                           "from sensor_msgs.msg import Image\n")
    found = {str(path.relative_to(tmp_path)): ros_imports(path) for path in ros_free_files(tmp_path)}
    assert found == {"avag_core/leaf.py": ["4: rclpy.node"], "tests/conftest.py": [],
                     "tests/core/test_x.py": ["1: avag_ros.data", "2: sensor_msgs.msg"]}


def test_avag_core_and_the_ros_free_tests_import_nothing_of_ros():
    files = ros_free_files(REPO)
    assert len(files) > 60 and REPO / "tests" / "core" / "test_export.py" in files  # the walk found them
    found = {str(path.relative_to(REPO)): imports for path in files if (imports := ros_imports(path))}
    assert not found, f"these import ROS, and could not run without it: {found}"


# Runs in a fresh interpreter: imports the third-party packages our modules import at module level, none of
# our own, then forks one child per module, which imports that module into an interpreter that holds none of
# ours. Our modules are each imported alone, and torch's few seconds of start-up are paid once, not per module.
FORK_EACH = """
import importlib, json, os, sys, traceback
third_party, modules = json.loads(sys.argv[1])
for name in third_party:
    try:
        importlib.import_module(name)
    except Exception:
        pass
results = {}
for module in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            os._exit(0)
        except BaseException:
            os.write(write, traceback.format_exc()[-3000:].encode())
            os._exit(1)
    os.close(write)
    with os.fdopen(read) as pipe:
        error = pipe.read()
    results[module] = {"status": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "error": error}
print(json.dumps(results))
"""
TORCH_CHECK = "import json, sys; import {module}; print(json.dumps('torch' in sys.modules))"


def third_party_imports(root: Path) -> list[str]:
    """Everything outside PACKAGES that some module imports at module level, by name."""
    names = set()
    for path in module_files(root).values():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module != "__future__":
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in PACKAGES)


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, dict]:
    modules = sorted(module_files(REPO))
    result = subprocess.run([sys.executable, "-c", FORK_EACH, json.dumps([third_party_imports(REPO), modules])],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.ros  # the avag_ros modules import rclpy, in the child processes
@pytest.mark.parametrize("module", sorted(module_files(REPO)))
def test_every_module_imports_on_its_own(imported_alone, module):
    report = imported_alone[module]
    assert report["status"] == 0, f"import {module} alone failed:\n{report['error']}"


def torch_after_import(module: str) -> bool:
    result = subprocess.run([sys.executable, "-c", TORCH_CHECK.format(module=module)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_light_modules_do_not_import_torch():
    """Each in a fresh interpreter of its own, without the fork server's preloaded torch."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        heavy = [m for m, torch in zip(TORCH_FREE, pool.map(torch_after_import, TORCH_FREE)) if torch]
    assert not heavy, f"these import torch: {heavy}"
