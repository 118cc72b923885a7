"""pyproject.toml declares what the package imports, and diffrax is in its tested range."""

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from scoresde_jax.core import odeint

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {
    "PIL": "pillow",
    "absl": "absl-py",
    "ml_collections": "ml-collections",
    "ml_dtypes": "ml-dtypes",
    "orbax": "orbax-checkpoint",
    "tensorflow_datasets": "tensorflow-datasets",
}
# Optional imports (guarded against ImportError) that no extra declares, with the reason.
UNDECLARED_OPTIONAL = {
    "tensorflow": "cli.py hides the accelerators from TensorFlow when it happens to be installed; "
    "TFDS reads prepared array_record data without it",
}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _requirements(specs) -> dict[str, str]:
    return {_name(s): s for s in specs}


REQUIRED = _requirements(PROJECT["dependencies"])
EXTRAS = {n for specs in PROJECT["optional-dependencies"].values() for n in _requirements(specs)}


def _is_import_error(node) -> bool:
    return isinstance(node, ast.Name) and node.id in ("ImportError", "ModuleNotFoundError")


def _guards_import_errors(node) -> bool:
    """``try: ... except ImportError`` or ``with contextlib.suppress(ImportError): ...``."""
    if isinstance(node, ast.Try):
        return any(_is_import_error(h.type) for h in node.handlers)
    if isinstance(node, ast.With):
        return any(
            isinstance(c := item.context_expr, ast.Call)
            and getattr(c.func, "attr", getattr(c.func, "id", None)) == "suppress"
            and any(_is_import_error(a) for a in c.args)
            for item in node.items
        )
    return False


def _third_party_imports() -> dict[str, dict[str, bool]]:
    """``{import name: {file: optional}}`` for every top-level package the package imports;
    ``optional``: every import of it in that file is guarded against ``ImportError``."""
    found: dict[str, dict[str, bool]] = {}
    for path in sorted((REPO / "scoresde_jax").rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = set()
        for node in ast.walk(tree):
            if _guards_import_errors(node):
                guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "scoresde_jax":
                    continue
                file = str(path.relative_to(REPO))
                optional = found.setdefault(top, {}).get(file, True)
                found[top][file] = optional and id(node) in guarded
    return found


IMPORTS = _third_party_imports()


def test_every_import_is_declared():
    problems = []
    for top, files in sorted(IMPORTS.items()):
        dist = _name(DISTRIBUTIONS.get(top, top))
        optional = all(files.values())
        if dist in REQUIRED or (optional and (dist in EXTRAS or top in UNDECLARED_OPTIONAL)):
            continue
        where = ", ".join(sorted(files))
        kind = "optional import" if optional else "import"
        problems.append(f"{top} ({kind} in {where}): declare {dist!r} in pyproject.toml")
    assert problems == [], "\n".join(problems)


def test_every_dependency_is_imported():
    imported = {_name(DISTRIBUTIONS.get(top, top)) for top in IMPORTS}
    assert sorted(set(REQUIRED) - imported) == []


def test_installed_diffrax_is_in_the_tested_range():
    spec = REQUIRED["diffrax"]
    specifiers = SpecifierSet(spec[len("diffrax") :].split(";")[0].strip())
    assert any(s.operator == "<" for s in specifiers), f"{spec!r}: no upper bound"
    installed = metadata.version("diffrax")
    assert Version(installed) in specifiers, f"diffrax {installed} is outside {spec!r}"
    assert diffrax.__version__ == installed


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "bosh3"])
def test_fsal_solver_state_is_diffrax_own(solver):
    # The one private diffrax structure the package builds: it matches diffrax's own initial
    # state, and with it each attempted step costs stages - 1 evaluations (plus the first one).
    solver_obj = odeint.SOLVERS[solver]()
    term = diffrax.ODETerm(lambda t, y, args: -y)
    y0 = jnp.ones(3)
    state = odeint._fsal_state(solver_obj, term, 0.0, 1.0, y0, -y0, None)
    reference = solver_obj.init(term, 0.0, 1.0, y0, None)
    assert jax.tree.structure(state) == jax.tree.structure(reference)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(state)] == [
        (a.shape, a.dtype) for a in jax.tree.leaves(reference)
    ]
    # diffrax's own state asks for the first stage (first_step=True); ours hands it over.
    assert bool(reference[0]) and not bool(state[0])

    calls = []

    def vector_field(t, y, args):
        jax.debug.callback(lambda _: calls.append(1), t)
        return -y

    y1, nfe, ok = jax.jit(
        lambda y: odeint.solve(
            vector_field,
            y,
            0.0,
            1.0,
            odeint.ODEOptions(rtol=1e-6, atol=1e-6, solver=solver, max_steps=1000),
        )
    )(y0)
    jax.effects_barrier()
    assert bool(ok) and int(nfe) == len(calls) > 1
    np.testing.assert_allclose(y1, np.exp(-1.0) * np.ones(3), rtol=1e-5)
