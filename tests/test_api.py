"""The curated API: what ``import scoresde_jax`` and each subpackage offer, and nothing passed on.

* every name of ``scoresde_jax.__all__`` resolves to the object of the module that defines it;
* every sampler, loss, likelihood function, SDE and network of the library is among them;
* a subpackage's ``__init__`` lists names of its own modules only (no other package's names);
* the public lists live in one place: implementation modules keep none of their own (their
  public names are those without a leading underscore).
"""

import ast
import importlib
import inspect
import pathlib

import pytest

import scoresde_jax

PACKAGE = pathlib.Path(scoresde_jax.__file__).resolve().parent


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_of(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [e.value for e in node.value.elts]
    return None


def _public(module) -> set[str]:
    """The functions and classes ``module`` defines under names without a leading underscore."""
    return {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and v.__module__ == module.__name__
    }


def test_every_public_name_resolves_to_its_home():
    for name in scoresde_jax.__all__:
        value = getattr(scoresde_jax, name)
        home = importlib.import_module(scoresde_jax._EXPORTS[name])
        assert getattr(home, name) is value, name
        defined_in = getattr(value, "__module__", home.__name__)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert defined_in.startswith(home.__name__), f"{name}: listed from {home.__name__}"
    with pytest.raises(AttributeError):
        scoresde_jax.not_a_name  # noqa: B018


def test_the_library_is_reachable_from_the_top():
    from scoresde_jax import models, sampling
    from scoresde_jax.core import likelihood, losses, score_matching, sde

    wanted = {n for n in sampling.__all__ if n.endswith("_sample")}
    wanted |= {"encode", "decode", "inpaint", "colorize", "ode_trajectory"}
    wanted |= {n for n in _public(losses) if n.endswith("_loss") or n == "get_loss_fn"}
    wanted |= {n for n in _public(score_matching) if "score_matching" in n}
    wanted |= {"log_likelihood", "bits_per_dim", "dequantize"} & _public(likelihood)
    wanted |= {"get_sde"} | {cls.__name__ for cls in sde.SDES.values()}
    wanted |= {n for n in models.__all__ if inspect.isclass(getattr(models, n))}
    wanted |= {"get_score_fn", "classifier_guided_score_fn", "convert_checkpoint", "train", "fit"}
    missing = sorted(wanted - set(scoresde_jax.__all__))
    assert not missing, f"not in scoresde_jax.__all__: {missing}"


@pytest.mark.parametrize(
    "package", ["core", "sampling", "models", "data", "metrics", "io", "run", "modes"]
)
def test_subpackages_list_only_their_own_names(package):
    module = importlib.import_module(f"scoresde_jax.{package}")
    for name in getattr(module, "__all__", []):
        value = getattr(module, name)
        home = getattr(value, "__module__", None)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert home.startswith(f"scoresde_jax.{package}"), f"{package}.{name} is {home}'s"


def test_implementation_modules_keep_no_public_list_of_their_own():
    listed = [
        name
        for path, name in _modules()
        if path.name != "__init__.py" and _all_of(ast.parse(path.read_text())) is not None
    ]
    assert not listed, "__all__ outside the package __init__ files: " + ", ".join(listed)


def test_the_readme_library_example_runs():
    text = (PACKAGE.parent / "README.md").read_text()
    start = text.index("```python\nimport jax\nimport scoresde_jax as sdj")
    code = text[start + len("```python\n") : text.index("```", start + 10)]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["x"].shape == (1000, 2) and namespace["res"].logp.shape == (1000,)
