"""flow2onnx as separate distributions: the core, one per op-handler family, and flow2onnx with them all."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from flow2onnx.lowering.families import CATALOGUE, family_names, family_of
from tools.families import checkout_families, render
from flow2onnx.lowering.plugin_manager import ENTRY_POINT_GROUP, load_plugins

ROOT = pathlib.Path(__file__).resolve().parent.parent
OP_HANDLERS = ROOT / "op_handlers"
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")
VERSION = importlib.metadata.version("flow2onnx-core")


def test_each_family_folder_is_an_installed_distribution_found_through_its_entry_point():
    folders = sorted(path.parent.name for path in OP_HANDLERS.glob("*/pyproject.toml") if path.parent.name != "all")
    assert len(folders) == 13
    assert [f"flow2onnx-{folder}" for folder in folders] == checkout_families() == family_names()
    for folder in folders:
        dist = importlib.metadata.distribution(f"flow2onnx-{folder}")
        (entry_point,) = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        assert (entry_point.name, entry_point.value) == (f"flow2onnx-{folder}", f"flow2onnx_{folder}")
        assert any(re.match(r"flow2onnx-core\b", requirement) for requirement in dist.requires)
        assert pathlib.Path(importlib.import_module(entry_point.value).__file__).parent == OP_HANDLERS / folder
    core = importlib.metadata.distribution("flow2onnx-core")
    assert [ep for ep in core.entry_points if ep.group == ENTRY_POINT_GROUP] == []
    assert importlib.util.find_spec("flow2onnx.op_handlers") is None


def test_the_flow2onnx_distribution_is_the_core_with_every_family_at_one_version():
    dist = importlib.metadata.distribution("flow2onnx")
    assert [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP] == []
    requires = dist.requires
    plain = sorted(requirement for requirement in requires if "extra ==" not in requirement)
    assert plain == sorted(f"{name}=={VERSION}" for name in ["flow2onnx-core", *family_names()])
    # Every one of the core's extras passes through, so `pip install "flow2onnx[flowvision]"` still works.
    core_extras = set(importlib.metadata.metadata("flow2onnx-core").get_all("Provides-Extra"))
    assert core_extras >= {"gpu", "flowvision", "test", "docs", "demo"}
    extras = {requirement.split(";")[0].strip() for requirement in requires if "extra ==" in requirement}
    assert extras == {f"flow2onnx-core[{extra}]=={VERSION}" for extra in core_extras}


def test_family_catalogue_is_current():
    families = checkout_families()
    expected = render(load_plugins(only=families).registry, families)
    assert CATALOGUE.read_text() == expected, f"{CATALOGUE} is out of date: run `python -m tools.families`"


def test_plugins_command_shows_each_family_with_its_distribution_and_version():
    done = subprocess.run([CLI, "plugins"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in done.stdout.splitlines()[1:] if line.strip()}
    for family in family_names():
        assert rows[family] == [family, importlib.metadata.version(family)]


# ---- the core with one family, installed for real ----

MODELS = '''
from flow2onnx._oneflow import import_oneflow

flow = import_oneflow()


def conv_only():
    """Only ops of the conv family: convolutions without bias (a bias is a bias_add, a math op)."""
    return flow.nn.Sequential(flow.nn.Conv2d(3, 8, 3, padding=1, bias=False), flow.nn.ConvTranspose2d(8, 4, 2, stride=2, bias=False))


def small_cnn():
    return flow.nn.Sequential(
        flow.nn.Conv2d(3, 8, 3), flow.nn.ReLU(), flow.nn.MaxPool2d(2), flow.nn.Flatten(), flow.nn.Linear(8 * 3 * 3, 5)
    )
'''


def _copy_sources(destination: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """This checkout's core and conv family, without build output, to build from outside the worktree."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    core = destination / "core-dist"
    for name in ("core", "plugins"):
        shutil.copytree(ROOT / name, core / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, core / name)
    conv = destination / "conv-dist"
    shutil.copytree(OP_HANDLERS / "conv", conv, ignore=skip)
    return core, conv


@pytest.fixture(scope="module")
def core_and_conv(tmp_path_factory):
    """Run flow2onnx where only flow2onnx-core and flow2onnx-conv are installed.

    Both are built from this checkout and pip-installed, not editable, into a throwaway directory.
    OneFlow and the other dependencies come from this environment's site-packages, seen through a
    folder of links to it that leaves out every flow2onnx distribution; Python runs with -S, so
    none of this environment's .pth files (its editable installs among them) apply.
    """
    base = tmp_path_factory.mktemp("core-and-conv")
    site, dependencies = base / "site", base / "dependencies"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run(pip + [str(path) for path in _copy_sources(base / "src")], check=True, timeout=600)
    dependencies.mkdir()
    for entry in pathlib.Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("flow2onnx", "__editable__")):
            (dependencies / entry.name).symlink_to(entry)
    (base / "family_models.py").write_text(MODELS)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOW2ONNX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(dependencies)])

    def run(*args):
        command = [sys.executable, "-S", "-m", "flow2onnx", *args]
        return subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=300)

    return run


def test_core_with_only_the_conv_family_lists_just_that_family(core_and_conv):
    done = core_and_conv("plugins")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == [
        "flow2onnx.plugins.onnxruntime_verifier",
        "flow2onnx.plugins.onnxsim_pass",
        "flow2onnx.plugins.onnxoptimizer_pass",
        "flow2onnx-conv",
    ]
    lowerings = load_plugins(only=["flow2onnx-conv"]).plugins["flow2onnx-conv"].lowerings
    assert rows[-1][1:4] == ["flow2onnx-conv", VERSION, str(lowerings)]


def test_core_with_only_the_conv_family_exports_and_verifies_a_conv_model(core_and_conv, tmp_path):
    output = tmp_path / "conv.onnx"
    done = core_and_conv("export", "family_models:conv_only", "--input-shape", "2,3,8,8", "-o", str(output))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all outputs match" in done.stdout
    assert output.exists()


def test_core_with_only_the_conv_family_names_the_family_of_every_missing_op(core_and_conv, tmp_path):
    output = tmp_path / "cnn.onnx"
    done = core_and_conv("export", "family_models:small_cnn", "--input-shape", "2,3,8,8", "-o", str(output))
    assert done.returncode == 1 and not output.exists()
    assert "Traceback" not in done.stderr
    missing = dict(re.findall(r"^  - (\w+): \d+ ops?, e\.g\. '[^']*'(.*)$", done.stderr, re.M))
    assert set(missing) == {"bias_add", "broadcast_add", "matmul", "max_pool_2d", "relu", "reshape"}, done.stderr
    for op_type, note in missing.items():
        family = family_of(op_type)
        assert family not in (None, "flow2onnx-conv")
        assert note == f"; lowered by {family}, not installed (pip install {family})"
