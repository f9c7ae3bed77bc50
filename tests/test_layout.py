"""The package layout holds: imports point down the order of LAYOUT.md, no circles, small modules.

The checker reads every module with `ast` (imports at the top, inside functions and under
`TYPE_CHECKING` alike), so it needs no TensorFlow and imports nothing from `mlcli`. It takes the
folder that holds the package, so that the tests at the bottom can show it failing on a small
package written to `tmp_path`.
"""

from __future__ import annotations

import ast
import pkgutil
import textwrap
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = "mlcli"

# The order of ../shared/LAYOUT.md ("The package layout"), copied here because a user's checkout
# or CI has no ../shared. A package may import its own modules or a package strictly below it
# (a higher number): nothing above, nothing sideways on the same level.
ORDER: dict[str, int] = {
    "cli": 1,
    "serving": 2,
    "training": 2,
    "exporting": 3,
    "tracking": 3,
    "evaluation": 3,
    "inference": 4,
    "models": 4,
    "preprocessing": 5,
    "runs": 5,
    "starter": 5,
    "features": 6,
    "data": 7,
    "config": 8,
}
GROUND_FLOOR = "ground floor"
GROUND_LEVEL = 9
# The modules directly under mlcli/ (`__init__` is the package itself, the API).
GROUND_MODULES = {
    "errors",
    "reporting",
    "_tensorflow",
    "_ray",
    "layers",
    "ensemble_layers",
    "files",
    "__init__",
    "__main__",
}
# `python -m mlcli` runs the CLI: the one import allowed to point up from the ground floor.
# (`mlcli.__init__` reaches the verbs by name, through importlib, when an attribute is asked
# for: that is no import statement, and so no edge here.)
ALLOWED_UP = {f"{PACKAGE}.__main__": {"cli"}}
MAX_LINES = 400  # LAYOUT.md: "a module past about 400 lines is two ideas"


@dataclass(frozen=True)
class Import:
    """One `mlcli` module named by an import statement of another."""

    importer: str
    imported: str
    path: Path
    line: int
    statement: str

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line} `{self.statement}`"


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under `root`, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _absolute(node: ast.ImportFrom, importer: str, path: Path) -> str:
    """The module a `from` import names, relative imports resolved against `importer`."""
    if node.level == 0:
        return node.module or ""
    package = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(root: Path) -> list[Import]:
    """Every import of one `mlcli` module by another, wherever it stands in the file."""
    known = modules(root)
    found = []
    for importer, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node, importer, path)
                # `from mlcli.data import tables` imports a module; `from mlcli.data.tables
                # import read_table` a name of one.
                named = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                    for alias in node.names
                ]
            else:
                continue
            for name in dict.fromkeys(named):
                if name == importer or not (name == PACKAGE or name.startswith(PACKAGE + ".")):
                    continue
                statement = ast.unparse(node).splitlines()[0]
                found.append(Import(importer, name, path, node.lineno, statement))
    return found


def place(module: str) -> tuple[str, int] | None:
    """The package of `module` in the order and its level; None for one the order lacks."""
    parts = module.split(".")
    if len(parts) == 1:
        return GROUND_FLOOR, GROUND_LEVEL
    if parts[1] in ORDER:
        return parts[1], ORDER[parts[1]]
    if len(parts) == 2 and parts[1] in GROUND_MODULES:
        return GROUND_FLOOR, GROUND_LEVEL
    return None


def unplaced_modules(root: Path) -> list[str]:
    """Modules in no package of the order and not on the ground floor."""
    return [
        f"{path.relative_to(root)}: {module} is in no package of LAYOUT.md's order "
        f"({', '.join(ORDER)}) and is not a ground-floor module "
        f"({', '.join(sorted(GROUND_MODULES))})"
        for module, path in modules(root).items()
        if place(module) is None
    ]


def missing_packages(root: Path) -> list[str]:
    """Packages of the order that are not subpackages of `mlcli/`."""
    present = {info.name for info in pkgutil.iter_modules([str(root / PACKAGE)]) if info.ispkg}
    return [
        f"{PACKAGE}/{name}/ is missing: LAYOUT.md puts {name} on level {ORDER[name]}"
        for name in ORDER
        if name not in present
    ]


def upward_imports(root: Path) -> list[str]:
    """Imports that point up or sideways in the order, each with the rule it breaks."""
    problems = []
    for edge in imports(root):
        source, target = place(edge.importer), place(edge.imported)
        if source is None or target is None:
            continue  # unplaced_modules reports the module itself
        (source_package, source_level), (target_package, target_level) = source, target
        if source_package == target_package or target_level > source_level:
            continue
        if target_package in ALLOWED_UP.get(edge.importer, ()):
            continue
        if source_package == GROUND_FLOOR:
            rule = "the ground floor imports nothing above it"
        elif target_level == source_level:
            rule = "no import sideways between two packages on the same level"
        else:
            rule = "imports point down the order only"
        problems.append(
            f"{edge.importer} ({source_package}, level {source_level}) imports "
            f"{edge.imported} ({target_package}, level {target_level}) at "
            f"{edge.where(root)}: {rule} (LAYOUT.md)"
        )
    return problems


def import_circles(root: Path) -> list[str]:
    """Each circle of imports between modules (a strongly connected component, Tarjan)."""
    known = modules(root)
    graph: dict[str, dict[str, Import]] = {module: {} for module in known}
    for edge in imports(root):
        if edge.imported in known:
            graph[edge.importer].setdefault(edge.imported, edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph[module]:
            if other not in index:
                connect(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in graph:
        if module not in index:
            connect(module)
    problems = []
    for component in components:
        cycle = _shortest_cycle(graph, component)
        steps = " -> ".join(f"{edge.imported} ({edge.where(root)})" for edge in cycle)
        members = ", ".join(component[:8]) + (
            f" and {len(component) - 8} more" if len(component) > 8 else ""
        )
        problems.append(
            f"import circle between {members}: {cycle[0].importer} -> {steps} "
            "(no circles, LAYOUT.md)"
        )
    return problems


def _shortest_cycle(graph: dict[str, dict[str, Import]], component: list[str]) -> list[Import]:
    """The imports of a shortest circle from the first module of `component` back to it."""
    start, members = component[0], set(component)
    came_by: dict[str, Import] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for other, edge in sorted(graph[module].items()):
            if other == start:
                cycle = [edge]
                while cycle[0].importer != start:
                    cycle.insert(0, came_by[cycle[0].importer])
                return cycle
            if other in members and other not in came_by:
                came_by[other] = edge
                queue.append(other)
    raise AssertionError(f"no circle through {start}")  # a component always holds one


def oversized_modules(root: Path, limit: int = MAX_LINES) -> list[str]:
    """Modules over `limit` lines, largest first."""
    sizes = {
        path.relative_to(root): len(path.read_text().splitlines())
        for path in modules(root).values()
    }
    return [
        f"{path}: {lines} lines, over {limit} (LAYOUT.md: split it along the idea)"
        for path, lines in sorted(sizes.items(), key=lambda item: -item[1])
        if lines > limit
    ]


def _report(problems: list[str]) -> str:
    return "\n".join(["", *problems])


def _expect_none(problems: list[str]) -> None:
    if problems:
        pytest.fail(f"{len(problems)} found:{_report(problems)}", pytrace=False)


# The layout of the package itself.


def test_every_package_of_the_layout_exists():
    _expect_none(missing_packages(REPO))


def test_every_module_has_a_place_in_the_layout():
    _expect_none(unplaced_modules(REPO))


def test_imports_point_down_the_layout():
    _expect_none(upward_imports(REPO))


def test_no_import_circle():
    _expect_none(import_circles(REPO))


def test_no_module_is_over_400_lines():
    _expect_none(oversized_modules(REPO))


def test_the_checker_sees_the_real_imports():
    edges = {(edge.importer, edge.imported) for edge in imports(REPO)}
    assert ("mlcli.__main__", "mlcli.cli.app") in edges  # allowed, and seen
    assert ("mlcli.files", "mlcli.errors") in edges
    assert len(edges) > 100


# The checker on a small package written to tmp_path: it must be able to fail.


def _write(root: Path, files: dict[str, str]) -> Path:
    for name in ["__init__.py", *(f"{package}/__init__.py" for package in ORDER)]:
        (root / PACKAGE / name).parent.mkdir(parents=True, exist_ok=True)
        (root / PACKAGE / name).touch()
    for name, text in files.items():
        (root / PACKAGE / name).parent.mkdir(parents=True, exist_ok=True)
        (root / PACKAGE / name).write_text(textwrap.dedent(text))
    return root


def test_a_package_that_follows_the_layout_passes(tmp_path):
    root = _write(
        tmp_path,
        {
            "errors.py": "class MlcliError(Exception): ...\n",
            "files.py": "from mlcli.errors import MlcliError\n",
            "__main__.py": "from mlcli.cli.app import main\n",
            "cli/app.py": "from mlcli.training import train\nfrom . import views\n",
            "cli/views.py": "from mlcli.runs.listing import list_runs\n",
            "training/train.py": "from ..config.schema import Config\nimport mlcli.data.tables\n",
            "runs/listing.py": "def list_runs(): ...\n",
            "config/schema.py": "from mlcli import files\n",
            "data/tables.py": "from mlcli.errors import MlcliError\n",
        },
    )
    assert missing_packages(root) == []
    assert unplaced_modules(root) == []
    assert upward_imports(root) == []
    assert import_circles(root) == []
    assert oversized_modules(root) == []
    assert {(edge.importer, edge.imported) for edge in imports(root)} >= {
        ("mlcli.cli.app", "mlcli.training.train"),
        ("mlcli.cli.app", "mlcli.cli.views"),
        ("mlcli.training.train", "mlcli.config.schema"),
        ("mlcli.training.train", "mlcli.data.tables"),
        ("mlcli.config.schema", "mlcli.files"),
    }


def test_an_upward_import_is_caught_wherever_it_stands(tmp_path):
    root = _write(
        tmp_path,
        {
            "data/tables.py": """\
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from mlcli.config.schema import Config

                def read():
                    from mlcli.features.schema import FeatureSchema
            """,
            "config/schema.py": "class Config: ...\n",
            "features/schema.py": "class FeatureSchema: ...\n",
        },
    )
    (problem,) = upward_imports(root)
    assert problem.startswith("mlcli.data.tables (data, level 7) imports mlcli.features.schema")
    assert "mlcli/data/tables.py:7 `from mlcli.features.schema import FeatureSchema`" in problem
    assert "imports point down the order only" in problem


def test_sideways_and_ground_floor_imports_are_caught(tmp_path):
    root = _write(
        tmp_path,
        {
            "serving/server.py": "from mlcli.training.train import train\n",
            "training/train.py": "def train(): ...\n",
            "errors.py": "from .config import schema\n",
            "config/schema.py": "",
            "__main__.py": "from mlcli.serving.server import serve\n",
        },
    )
    problems = _report(upward_imports(root))
    assert "mlcli.serving.server (serving, level 2) imports mlcli.training.train" in problems
    assert "no import sideways between two packages on the same level" in problems
    assert "mlcli.errors (ground floor, level 9) imports mlcli.config.schema" in problems
    assert "the ground floor imports nothing above it" in problems
    assert "mlcli.__main__ (ground floor, level 9) imports mlcli.serving.server" in problems
    assert len(upward_imports(root)) == 3


def test_a_circle_is_caught_even_inside_one_package(tmp_path):
    root = _write(
        tmp_path,
        {
            "data/tables.py": "from mlcli.data.columns import select\n",
            "data/columns.py": "def select():\n    from mlcli.data import splits\n",
            "data/splits.py": "from .tables import read\n",
            "data/dialect.py": "from mlcli.data.tables import read\n",
        },
    )
    assert upward_imports(root) == []
    (problem,) = import_circles(root)
    assert problem.startswith(
        "import circle between mlcli.data.columns, mlcli.data.splits, mlcli.data.tables:"
    )
    assert problem.endswith(
        ": mlcli.data.columns -> mlcli.data.splits (mlcli/data/columns.py:2 "
        "`from mlcli.data import splits`) -> mlcli.data.tables (mlcli/data/splits.py:1 "
        "`from .tables import read`) -> mlcli.data.columns (mlcli/data/tables.py:1 "
        "`from mlcli.data.columns import select`) (no circles, LAYOUT.md)"
    )


def test_a_missing_package_an_unknown_one_and_a_long_module_are_caught(tmp_path):
    root = _write(tmp_path, {"utils/__init__.py": "", "helpers.py": "x = 1\n" * 401})
    (tmp_path / PACKAGE / "starter" / "__init__.py").unlink()
    (tmp_path / PACKAGE / "starter").rmdir()
    assert missing_packages(root) == [
        "mlcli/starter/ is missing: LAYOUT.md puts starter on level 5"
    ]
    assert [problem.split(":")[0] for problem in unplaced_modules(root)] == [
        "mlcli/helpers.py",
        "mlcli/utils/__init__.py",
    ]
    assert oversized_modules(root) == [
        "mlcli/helpers.py: 401 lines, over 400 (LAYOUT.md: split it along the idea)"
    ]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("from . import tables", "mlcli.data.tables"),
        ("from .tables import read", "mlcli.data.tables"),
        ("from .. import errors", "mlcli.errors"),
        ("from ..config.schema import Config", "mlcli.config.schema"),
        ("import mlcli.config.schema as schema", "mlcli.config.schema"),
        ("from mlcli import __version__", "mlcli"),
    ],
)
def test_relative_and_aliased_imports_are_resolved(tmp_path, statement, expected):
    root = _write(
        tmp_path,
        {
            "data/splits.py": statement + "\n",
            "data/tables.py": "def read(): ...\n",
            "errors.py": "",
            "config/schema.py": "class Config: ...\n",
        },
    )
    assert [edge.imported for edge in imports(root)] == [expected]
