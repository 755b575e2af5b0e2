"""Which tests use ROS: the rule behind the `ros` marker (conftest.py), by which CI runs those tests on the second
ROS 2 distribution too (.ci/run).

A test uses ROS when its module imports a ROS package at module level, or its own function or a fixture of its
module or of conftest.py imports one in its body, directly or through this repository's modules (tests/, avag_core,
avag_ros), imports inside functions included. Read from the source, never by importing it: conftest.py stays free
of ROS (bench/gpu_check.py runs the ROS-free tests on a machine without ROS). A test that starts ROS only in a child
process says so itself with @pytest.mark.ros.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
PACKAGES = ("avag_core", "avag_ros")
# What the ROS 2 distribution provides to Python, besides its message and interface packages (*_msgs,
# *_interfaces, avag_interfaces included: each distribution's rosidl generates them).
ROS_PACKAGES = {"rclpy", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py", "rpyutils"}


def is_ros(module: str) -> bool:
    top = module.split(".")[0]
    return top in ROS_PACKAGES or top.endswith(("_msgs", "_interfaces"))


@lru_cache(maxsize=None)
def _files() -> dict[str, Path]:
    """Dotted name -> file of every module a test can import from this repository."""
    files = {path.stem: path for path in TESTS.rglob("*.py")}  # tests import each other by bare name
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _imported(nodes, module: str) -> set[str]:
    """Modules named by the import statements among `nodes` (walked whole), relative ones resolved in `module`."""
    package = module if _files()[module].name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in nodes:
        for statement in ast.walk(node):
            if isinstance(statement, ast.Import):
                names.update(alias.name for alias in statement.names)
            elif isinstance(statement, ast.ImportFrom):
                source = statement.module or ""
                if statement.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - statement.level + 1])
                    source = f"{base}.{source}" if source else base
                names.add(source)
                names.update(f"{source}.{alias.name}" for alias in statement.names
                             if f"{source}.{alias.name}" in _files())
    return names


@lru_cache(maxsize=None)
def _module_imports(module: str) -> frozenset[str]:
    return frozenset(_imported([_tree(_files()[module])], module))


def _reaches_ros(names: set[str]) -> bool:
    """Whether these imports name ROS, or a module of this repository whose imports reach ROS."""
    pending, seen = list(names), set()
    while pending:
        name = pending.pop()
        if is_ros(name):
            return True
        if name in _files() and name not in seen:
            seen.add(name)
            pending.extend(_module_imports(name))
    return False


@lru_cache(maxsize=None)
def _top_level_uses_ros(module: str) -> bool:
    body = [node for node in _tree(_files()[module]).body
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return _reaches_ros(_imported(body, module))


@lru_cache(maxsize=None)
def _functions(module: str) -> dict[str, list[ast.AST]]:
    """Every function of `module` by name, methods included."""
    functions: dict[str, list[ast.AST]] = {}
    for node in ast.walk(_tree(_files()[module])):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.setdefault(node.name, []).append(node)
    return functions


def _function_uses_ros(module: str, name: str) -> bool:
    nodes = _functions(module).get(name, [])
    return bool(nodes) and _reaches_ros(_imported(nodes, module))


def uses_ros(module: str, function: str, fixtures: list[str]) -> bool:
    """Whether the test `function` of test module `module` (a file under tests/, by its bare name), with these
    fixtures, uses ROS."""
    if _top_level_uses_ros("conftest") or _top_level_uses_ros(module) or _function_uses_ros(module, function):
        return True
    return any(_function_uses_ros(where, fixture) for fixture in fixtures for where in (module, "conftest"))
