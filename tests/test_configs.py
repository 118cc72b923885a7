"""Every config file loads and builds its SDE, optimizer, loss, sampler and network, and every
field it sets is read by the package.

Networks are built abstractly (``jax.eval_shape``): no weights are allocated, so the 1024x1024
configs cost no more than the CIFAR-10 ones.
"""

import ast
import json
import re
from pathlib import Path

import pytest
from ml_collections import ConfigDict

from scoresde_jax.run import experiment
from scoresde_jax.run.summary import count_parameters, load_config, main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    str(p.relative_to(REPO))
    for p in (REPO / "configs").rglob("*.py")
    if not p.name.startswith(("default", "_")) and p.name != "common.py"
)

# Parameter counts of the official implementation's networks for the same experiments, counted
# with the PyTorch reference (yang-song/score_sde_pytorch, commit cb1f359) built from the
# original config files; NCSN and NCSNv2 after fixing that code's constructor bugs (misspelt
# ``channels`` and normalization fields), which leave the architecture unchanged. The DDPM
# without time embedding fails to build there and was counted with the original JAX code.
EXPECTED = {
    # CIFAR-10, VE SDE
    "configs/ve/cifar10.py": 62_758_915,
    "configs/ve/cifar10_ncsnpp_continuous.py": 62_758_915,
    "configs/ve/cifar10_ncsnpp_deep_continuous.py": 107_587_075,
    "configs/ve/cifar10_ncsnpp.py": 62_693_251,
    "configs/ve/cifar10_ddpm.py": 35_218_947,
    # CIFAR-10, VP SDE
    "configs/vp/cifar10.py": 61_804_419,
    "configs/vp/cifar10_ddpmpp_continuous.py": 61_804_419,
    "configs/vp/cifar10_ddpmpp_deep_continuous.py": 106_632_579,
    "configs/vp/cifar10_ddpmpp.py": 61_804_419,
    "configs/vp/cifar10_ncsnpp_continuous.py": 62_693_251,
    "configs/vp/cifar10_ncsnpp_deep_continuous.py": 107_521_411,
    "configs/vp/cifar10_ncsnpp.py": 62_693_251,
    "configs/vp/cifar10_ddpm.py": 35_218_947,
    "configs/vp/ddpm/cifar10.py": 35_218_947,
    "configs/vp/ddpm/cifar10_continuous.py": 35_218_947,
    "configs/vp/ddpm/cifar10_unconditional.py": 32_329_347,
    # CIFAR-10, sub-VP SDE
    "configs/subvp/cifar10.py": 61_804_419,
    "configs/subvp/cifar10_ddpmpp_continuous.py": 61_804_419,
    "configs/subvp/cifar10_ddpmpp_deep_continuous.py": 106_632_579,
    "configs/subvp/cifar10_ncsnpp_continuous.py": 62_693_251,
    "configs/subvp/cifar10_ncsnpp_deep_continuous.py": 107_521_411,
    "configs/subvp/cifar10_ddpm_continuous.py": 35_218_947,
    # CelebA 64, LSUN, FFHQ, CelebA-HQ
    "configs/ve/celeba_ncsnpp.py": 62_693_251,
    "configs/ve/church_ncsnpp_continuous.py": 65_574_549,
    "configs/ve/bedroom_ncsnpp_continuous.py": 65_574_549,
    "configs/ve/ffhq_256_ncsnpp_continuous.py": 65_574_549,
    "configs/ve/celebahq_256_ncsnpp_continuous.py": 65_574_549,
    "configs/ve/ffhq_ncsnpp_continuous.py": 105_785_896,
    "configs/ve/celebahq_ncsnpp_continuous.py": 105_785_896,
    "configs/vp/ddpm/church.py": 111_569_923,
    "configs/vp/ddpm/bedroom.py": 111_569_923,
    "configs/vp/ddpm/celebahq.py": 111_569_923,
    # NCSN (the conditional normalizations grow with the number of noise levels) and NCSNv2
    "configs/ve/ncsn/cifar10.py": 30_117_635,
    "configs/ve/ncsn/cifar10_5.py": 30_117_635,
    "configs/ve/ncsn/cifar10_124.py": 39_750_659,
    "configs/ve/ncsn/cifar10_1245.py": 39_750_659,
    "configs/ve/ncsn/celeba.py": 30_117_635,
    "configs/ve/ncsn/celeba_5.py": 30_117_635,
    "configs/ve/ncsn/celeba_124.py": 51_379_715,
    "configs/ve/ncsn/celeba_1245.py": 51_379_715,
    "configs/ve/ncsnv2/cifar10.py": 29_694_083,
    "configs/ve/ncsnv2/celeba.py": 29_694_083,
    "configs/ve/ncsnv2/bedroom.py": 83_445_379,
}

# Fields the data pipeline, the training loop and the evaluation read from every image config.
IMAGE_FIELDS = {
    "data": (
        "dataset",
        "image_size",
        "num_channels",
        "random_flip",
        "centered",
        "uniform_dequantization",
        "category",
        "source",
        "path",
        "data_dir",
        "num_classes",
    ),
    "training": (
        "sde",
        "batch_size",
        "n_iters",
        "n_jitted_steps",
        "snapshot_freq",
        "log_freq",
        "eval_freq",
        "snapshot_freq_for_preemption",
        "snapshot_sampling",
        "snapshot_samples",
        "max_to_keep",
        "progress_bar",
        "likelihood_weighting",
        "importance_sampling",
        "continuous",
        "reduce_mean",
    ),
    "eval": (
        "begin_ckpt",
        "end_ckpt",
        "batch_size",
        "enable_loss",
        "enable_bpd",
        "bpd_dataset",
        "num_repeats",
        "enable_sampling",
        "num_samples",
        "rtol",
        "atol",
        "ode_solver",
        "exact_trace",
        "num_probes",
        "max_examples",
        "fid_stats_path",
        "inception_weights",
    ),
    "sampling": (
        "method",
        "predictor",
        "corrector",
        "snr",
        "n_steps_each",
        "noise_removal",
        "probability_flow",
        "eps",
        "num_steps",
        "ode_solver",
        "rtol",
        "atol",
        "batch_size",
    ),
    "model": ("name", "dtype", "ema_rate", "sigma_min", "sigma_max", "num_scales"),
}
DATASETS = {"CIFAR10", "SVHN", "CELEBA", "LSUN", "FFHQ", "CelebAHQ", "MNIST", "colored_mnist"}
SOURCES = {"auto", "tfds", "npz", "mnist_idx", "cifar10_python", "folder", "tfrecord"}


def _docstring(path: str) -> str:
    return ast.get_docstring(ast.parse((REPO / path).read_text())) or ""


def _load(path: str, monkeypatch) -> ConfigDict:
    monkeypatch.chdir(REPO)
    return load_config(path)


def _is_image_config(config) -> bool:
    return config.data.get("dataset_kind", "image") == "image"


def test_config_list_is_not_empty():
    assert "configs/ve/cifar10.py" in CONFIGS and "configs/toy/gmm.py" in CONFIGS


def test_expected_counts_name_existing_configs():
    assert sorted(set(EXPECTED) - set(CONFIGS)) == []


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds(path, monkeypatch):
    config = _load(path, monkeypatch)
    sde = experiment.sde_from_config(config)
    assert sde.N == config.model.num_scales
    experiment.optimizer_from_config(config.optim)
    experiment.loss_from_config(config, sde)
    experiment.sampler_from_config(config.sampling, sde)
    n = count_parameters(config)
    assert n > 0
    if path in EXPECTED:
        assert n == EXPECTED[path]
    # A count quoted in the docstring ("62,758,915 parameters") is the network's.
    quoted = re.findall(r"(\d{1,3}(?:,\d{3})+) parameters", _docstring(path))
    assert all(int(q.replace(",", "")) == n for q in quoted), (quoted, n)


@pytest.mark.parametrize("path", CONFIGS)
def test_docstring_has_its_command_line(path):
    # Shell line continuations join a command split over several lines.
    text = re.sub(r"\\\n\s*", " ", _docstring(path))
    commands = [
        line.strip() for line in text.splitlines() if line.strip().startswith("python main.py")
    ]
    assert any(
        f"--config {path}" in c and "--workdir " in c and "--mode train" in c for c in commands
    ), f"{path}: no 'python main.py --config {path} --workdir W --mode train' in its docstring"


def _none_fields(config: ConfigDict, prefix=""):
    for key in config.keys():
        value = config[key]
        if isinstance(value, ConfigDict):
            yield from _none_fields(value, f"{prefix}{key}.")
        elif value is None:
            yield f"{prefix}{key}", config.get_type(key)


@pytest.mark.parametrize("path", CONFIGS)
def test_unset_fields_can_be_set_from_the_command_line(path, monkeypatch):
    config = _load(path, monkeypatch)
    untyped = [name for name, kind in _none_fields(config) if kind is type(None)]
    assert untyped == [], f"use ml_collections.config_dict.placeholder(type) for {untyped}"


@pytest.mark.parametrize("path", CONFIGS)
def test_image_configs_have_the_pipeline_fields(path, monkeypatch):
    config = _load(path, monkeypatch)
    if not _is_image_config(config):
        pytest.skip("not an image config")
    missing = [
        f"{section}.{name}"
        for section, names in IMAGE_FIELDS.items()
        for name in names
        if name not in config[section]
    ]
    assert missing == []
    data = config.data
    assert data.dataset in DATASETS
    assert data.source in SOURCES
    assert config.eval.bpd_dataset in ("test", "train")
    if data.dataset in ("CIFAR10", "SVHN", "MNIST"):
        assert data.num_classes == 10
    if data.dataset == "LSUN":
        assert data.category in ("church_outdoor", "bedroom")
    if data.dataset in ("FFHQ", "CelebAHQ"):
        # These read a TFRecord file whose path the command line supplies.
        assert data.source == "tfrecord"
        assert "--config.data.path=" in _docstring(path)


# -------------------------------------------------------------------------------------------
# Every field is read somewhere.

# ConfigDict methods: calling them reads no one field.
_CONFIG_METHODS = frozenset(
    {"get", "items", "keys", "values", "to_dict", "unlocked", "lock", "unlock", "get_type"}
    | {"copy_and_resolve_references"}
)
# Code that reads fields only to check them or to fingerprint results: a field read only there
# would still be dead.
_NOT_READERS = ("run/preflight.py", "run/results.py")


class _FieldReads:
    """The config fields a module reads, found in its syntax tree (no code is run).

    An expression stands for a config node when it is the name ``config`` / ``cfg`` or an
    attribute ``.config`` (the root), a parameter named ``<section>_config``, a section of the
    root (``X.data``, ``X.get("data")``, ``X["data"]``), a name assigned one of these in the
    same or an enclosing function (``m, d = config.model, config.data``), or a parameter of a
    function of the module that some call passes one of these (``_ode_settings(config.eval)``).
    A field is read by ``node.f``, ``node.get("f", ...)``, ``node["f"]``, ``getattr(node, "f")``
    or ``"f" in node``. Loops over a section (``items()``, fingerprints) read no named field.
    """

    def __init__(self, sections):
        self.sections = frozenset(sections)
        self.reads = set()

    def scan_module(self, tree):
        self.funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        self.bound = {}
        for _ in range(3):  # call-site bindings found in one pass are used by the next
            self._scan(tree, {})
        return self

    def node_path(self, node, aliases):
        if isinstance(node, ast.Name):
            if node.id in ("config", "cfg"):
                return ()
            if node.id.removesuffix("_config") in self.sections:
                return (node.id.removesuffix("_config"),)
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute) and node.attr == "config":
            return ()
        read = self.field_read(node, aliases)
        if read is not None and read[:-1] == () and read[-1] in self.sections:
            return read
        return None

    def field_read(self, node, aliases):
        """The path of the field ``node`` reads, or None."""
        base, name = None, None
        if isinstance(node, ast.Attribute) and node.attr not in _CONFIG_METHODS:
            base, name = node.value, node.attr
        elif isinstance(node, ast.Call) and _is_getattr(node) and _text(node.args[1]):
            base, name = node.args[0], node.args[1].value
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get":
            if node.args and _text(node.args[0]):
                base, name = node.func.value, node.args[0].value
        elif isinstance(node, ast.Subscript) and _text(node.slice):
            base, name = node.value, node.slice.value
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            if _text(node.left):
                base, name = node.comparators[0], node.left.value
        path = None if base is None else self.node_path(base, aliases)
        return None if path is None else (*path, name)

    def _scan(self, tree, aliases):
        for node in ast.iter_child_nodes(tree):
            if isinstance(node, ast.Call):
                self._bind_call(node, aliases)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                inner = {**aliases, **self.bound.get(getattr(node, "name", None), {})}
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Assign):
                        for target in sub.targets:
                            self._bind(target, sub.value, inner)
                self._scan(node, inner)
                continue
            read = self.field_read(node, aliases)
            if read is not None:
                self.reads.add(read)
            self._scan(node, aliases)

    def _bind(self, target, value, aliases):
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            for t, v in zip(target.elts, value.elts, strict=False):
                self._bind(t, v, aliases)
        elif isinstance(target, ast.Name) and (path := self.node_path(value, aliases)) is not None:
            aliases[target.id] = path

    def _bind_call(self, call, aliases):
        f = call.func
        name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
        if name not in self.funcs:
            return
        params = [a.arg for a in self.funcs[name].args.args if a.arg != "self"]
        passed = list(zip(params, call.args, strict=False))
        passed += [(k.arg, k.value) for k in call.keywords if k.arg in params]
        for param, arg in passed:
            if (path := self.node_path(arg, aliases)) is not None:
                self.bound.setdefault(name, {})[param] = path


def _text(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _is_getattr(call) -> bool:
    named = isinstance(call.func, ast.Name) and call.func.id in ("getattr", "hasattr")
    return named and len(call.args) >= 2


def _leaves(config: ConfigDict, prefix=()):
    for key in config.keys():
        if isinstance(config[key], ConfigDict):
            yield from _leaves(config[key], (*prefix, key))
        else:
            yield (*prefix, key)


def _package_reads(sections) -> set:
    finder = _FieldReads(sections)
    for path in sorted((REPO / "scoresde_jax").rglob("*.py")):
        if not str(path).endswith(_NOT_READERS):
            finder.scan_module(ast.parse(path.read_text()))
    return finder.reads


def test_field_reads_follow_aliases_and_calls():
    source = """
def build(config):
    m, d = config.model, config.data
    ec = config.get("eval")
    return m.nf, d["image_size"], ec.get("rtol", 1e-5), _solver(config.sampling), config.seed

def _solver(s):
    return getattr(s, "ode_solver", "tsit5"), "eps" in s, {k: v for k, v in s.items()}

def sampler(sampling_config):
    return sampling_config.method
"""
    reads = _FieldReads({"model", "data", "eval", "sampling"}).scan_module(ast.parse(source))
    assert reads.reads == {
        ("model",), ("data",), ("eval",), ("sampling",), ("seed",),
        ("model", "nf"), ("data", "image_size"), ("eval", "rtol"),
        ("sampling", "ode_solver"), ("sampling", "eps"), ("sampling", "method"),
    }  # fmt: skip


def test_every_config_field_is_read(monkeypatch):
    """Each leaf field of each config is read by the package's code: a field no code reads is a
    setting that silently does nothing (see :class:`_FieldReads` for what counts as a read)."""
    leaves = {leaf: path for path in CONFIGS for leaf in _leaves(_load(path, monkeypatch))}
    reads = _package_reads({leaf[0] for leaf in leaves if len(leaf) > 1})
    unread = sorted(
        ".".join(leaf) + f" ({path})" for leaf, path in leaves.items() if leaf not in reads
    )
    assert unread == []


def test_summary_command_line(capsys):
    path = str(REPO / "configs/toy/gmm.py")
    rows = main([path, "--json"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == rows and rows[0]["model"] == "mlp"
    assert rows[0]["parameters"] == count_parameters(load_config(path)) > 0
