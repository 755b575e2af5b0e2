"""The README's and docs/'s commands name only what exists: launch arguments of launch/grounding.launch.py, the
node's parameters, Python modules; and the README's parameter table is the node's parameter table.

Truth comes from the sources, never from the documents: the launch file's own arguments from its syntax tree
(`launch` is not installable here), the parameter-setting ones and every parameter from avag_ros.parameters, modules
from importlib. Only fenced code blocks are read: they are what users copy."""
import ast
import importlib.util
import re

import pytest
import yaml

from avag_ros.parameters import LAUNCH_ARGUMENTS, SPECS, USE_SIM_TIME

from conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LAUNCH_FILE = REPO / "launch" / "grounding.launch.py"
PARAMETERS = {spec.name for spec in SPECS} | {USE_SIM_TIME.name}
# Modules a command imports on a ROS 2 install, not in this venv: colcon comes from apt there
# (python3-colcon-common-extensions) and runs with the workspace venv's interpreter.
ROS_INSTALL_MODULES = {"colcon"}


def launch_arguments() -> set[str]:
    """Every argument the launch file declares: its LAUNCH_ONLY table's keys, read from its syntax tree, and one
    per entry of avag_ros.parameters.LAUNCH_ARGUMENTS, which it declares in a loop (asserted here too)."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    table = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and any(getattr(target, "id", "") == "LAUNCH_ONLY" for target in node.targets))
    loops = [node for node in ast.walk(tree) if isinstance(node, ast.comprehension)
             and "LAUNCH_ARGUMENTS" in ast.unparse(node.iter)]
    assert loops, "the launch file no longer declares one argument per LAUNCH_ARGUMENTS entry"
    return {key.value for key in table.keys} | set(LAUNCH_ARGUMENTS)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def commands(body: str) -> list[str]:
    """Shell lines with their backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line.split(" #")[0] for line in joined.splitlines() if not line.lstrip().startswith("#")]


def unknown_names(text: str) -> list[str]:
    """What the code blocks of `text` name that does not exist, each as 'kind name'."""
    arguments, unknown = launch_arguments(), []
    for language, body in code_blocks(text):
        if language in ("yaml", "yml"):
            for node, settings in (yaml.safe_load(body) or {}).items():
                if "affordance_grounding" in str(node) and isinstance(settings, dict):
                    unknown += [f"parameter {name}" for name in flatten(settings.get("ros__parameters", {}))
                                if name not in PARAMETERS]
            continue
        for line in commands(body):
            if "ros2 launch avag_ros" in line:
                launch = line[line.index("ros2 launch avag_ros"):]
                unknown += [f"launch argument {name}" for name in re.findall(r"(?<![\w.-])([\w.]+):=", launch)
                            if name not in arguments]
            if "grounding_node" in line:  # -p sets a parameter of the command's own node, ours only here
                unknown += [f"parameter {name}" for name in re.findall(r"-p\s+([\w.]+):=", line)
                            if name not in PARAMETERS]
            for module in re.findall(r"python3?\s+-m\s+([\w.]+)", line):
                if module.split(".")[0] not in ROS_INSTALL_MODULES and importlib.util.find_spec(module) is None:
                    unknown.append(f"module {module}")
    return unknown


def flatten(tree: dict, prefix: str = "") -> list[str]:
    names = []
    for key, value in tree.items():
        names += flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_code_blocks_name_only_what_exists(document):
    assert unknown_names(document.read_text()) == []


def test_a_name_that_does_not_exist_is_found():
    bogus = """```bash
ros2 launch avag_ros grounding.launch.py checkpoint:=/m.pt audio_devise:=USB \\
    depth_enabled:=true
ros2 run avag_ros grounding_node --ros-args -p audio.sample_rte:=48000 -p threshold:=0.6
.venv/bin/python -m avag_ros.no_such_tool --help
```

```yaml
/**/affordance_grounding:
  ros__parameters:
    reuse:
      max_chnge: 0.0
```
"""
    assert unknown_names(bogus) == ["launch argument audio_devise", "parameter audio.sample_rte",
                                    "module avag_ros.no_such_tool", "parameter reuse.max_chnge"]


def test_the_readme_parameter_table_is_the_nodes():
    rows = re.findall(r"^\| `([\w.]+)` \| (`[^|]*`) \| (configure|run time) \|", (REPO / "README.md").read_text(),
                      flags=re.M)
    table = {name: (default, when) for name, default, when in rows}
    assert set(table) == {spec.name for spec in SPECS}
    for spec in SPECS:
        default = f'"{spec.default}"' if isinstance(spec.default, str) else \
            str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
        assert table[spec.name] == (f"`{default}`", "configure" if spec.read_only else "run time"), spec.name
