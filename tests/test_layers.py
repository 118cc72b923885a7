"""The package's house plan, read from its source: three layers with imports only downward.

``errors`` is the floor every layer may use; the library (``core``, ``io``, ``models``, ``data``,
``sampling``, ``metrics``) never imports ``run`` or ``modes`` and never takes a config; ``run``
never imports ``modes``; each mode is a leaf that no other mode imports; ``cli`` sits on top.
Every import is counted, also those inside functions, and the module graph has no circle.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "scoresde_jax"

LIBRARY = ("core", "io", "models", "data", "sampling", "metrics")
RANKS = {
    "errors": 0,
    "xla_flags": 0,
    **dict.fromkeys(LIBRARY, 1),
    "run": 2,
    "modes": 3,
    "cli": 4,
    "convert": 4,
    "feature_classifier": 4,
}

# Imports of package modules placed inside functions, and why they must stay there. The command
# line reports mistakes in its arguments before JAX is loaded (a second or two instead of ten),
# so the modes are imported only once the arguments are known to be good.
LAZY_OK = {
    "scoresde_jax.cli": "the command line checks its arguments before importing JAX",
    "scoresde_jax.convert": "the converter's command line, for the same reason",
    "scoresde_jax.run.preflight": "the checks run before anything heavy is imported",
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The package module that ``name`` (a module or a name in one) refers to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: pathlib.Path) -> list[tuple[str, bool, int]]:
    """``(module, inside_a_function, line)`` for every import of a package module in ``path``."""
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            targets = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                targets = [f"{child.module}.{a.name}" for a in child.names]
            for target in targets:
                if target.split(".")[0] == "scoresde_jax":
                    resolved = _resolve(target)
                    if resolved and resolved != "scoresde_jax":
                        found.append((resolved, in_function, child.lineno))
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if m != "scoresde_jax" and _layer(m) not in RANKS]
    assert not unplaced, f"modules outside the layers {sorted(RANKS)}: {unplaced}"


def test_imports_only_go_down():
    upward = []
    for module, imports in GRAPH.items():
        if module == "scoresde_jax":
            continue
        for target, _, line in imports:
            if RANKS[_layer(target)] > RANKS[_layer(module)]:
                upward.append(f"{MODULES[module].name}:{line} {module} -> {target}")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_modes_are_leaves():
    crossing = [
        f"{module} -> {target}"
        for module, imports in GRAPH.items()
        if _layer(module) == "modes"
        for target, _, _ in imports
        if _layer(target) == "modes" and target != "scoresde_jax.modes"
    ]
    assert not crossing, "modes importing other modes:\n" + "\n".join(crossing)


def test_no_import_circle():
    edges = {m: {t for t, _, _ in imports if t != m} for m, imports in GRAPH.items()}
    # A package's __init__ importing its own submodules is not a circle of the plan's kind.
    for m in edges:
        edges[m] = {
            t for t in edges[m] if not (t.startswith(m + ".") and MODULES[m].stem == "__init__")
        }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_imports_inside_functions_have_a_reason():
    lazy = [
        f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target}"
        for module, imports in GRAPH.items()
        if module not in LAZY_OK
        for target, inside, line in imports
        if inside
    ]
    assert not lazy, "package imports inside functions (move them to the top):\n" + "\n".join(lazy)


def _takes_config(node: ast.AST) -> list[str]:
    names = []
    for fn in ast.walk(node):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
            names += [f"{fn.name}({a.arg})" for a in args if a.arg.endswith("config")]
    return names


@pytest.mark.parametrize("package", LIBRARY)
def test_library_never_reads_a_config(package):
    offenders = []
    for module, path in MODULES.items():
        if _layer(module) != package:
            continue
        tree = ast.parse(path.read_text())
        imports_ml_collections = any(
            isinstance(n, ast.Import | ast.ImportFrom)
            and any(
                (getattr(n, "module", None) or a.name).startswith("ml_collections") for a in n.names
            )
            for n in ast.walk(tree)
        )
        if imports_ml_collections:
            offenders.append(f"{module} imports ml_collections")
        offenders += [f"{module}: {f}" for f in _takes_config(tree)]
    assert not offenders, "library code reading configs:\n" + "\n".join(offenders)


def test_each_data_format_stands_alone():
    # One file per format: a reader shares only formats.base, never another reader's code.
    formats = "scoresde_jax.data.formats"
    readers = [m for m in MODULES if m.startswith(formats + ".") and m != f"{formats}.base"]
    assert len(readers) >= 6
    crossing = [
        f"{m} -> {t}"
        for m in readers
        for t, _, _ in GRAPH[m]
        if t.startswith(formats) and t != f"{formats}.base"
    ]
    assert not crossing, "format modules importing each other:\n" + "\n".join(crossing)


def test_the_checks_see_the_package():
    # Guards the test itself: the graph must hold the known downward edges.
    assert "scoresde_jax.core.sde" in {t for t, _, _ in GRAPH["scoresde_jax.core.score"]}
    assert len(MODULES) > 40


def test_core_modules_keep_their_short_names():
    import scoresde_jax
    from scoresde_jax.core import likelihood, sde

    assert scoresde_jax.sde is sde and scoresde_jax.likelihood is likelihood
    assert scoresde_jax.sde.get_sde("vesde").sigma_max == 50.0
    with pytest.raises(AttributeError):
        scoresde_jax.no_such_module  # noqa: B018
