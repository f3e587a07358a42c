"""The plugin author documentation stays true: the hook reference, the included example, its tests."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys

import onnx
import pytest

from flow2onnx.lowering import plugin_docs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "plugins.md")
EXAMPLE = os.path.join(ROOT, "examples", "flow2onnx-example-plugin")
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")


def read(path):
    with open(path) as file:
        return file.read()


def test_hook_reference_is_current():
    text = read(DOCS)
    assert plugin_docs.update(text) == text, "run: python -m flow2onnx.lowering.plugin_docs docs/plugins.md"


@pytest.mark.parametrize("spec", plugin_docs.hook_specs(), ids=lambda spec: spec.__name__)
def test_every_hook_is_documented_and_tested(spec):
    doc = inspect.getdoc(spec) or ""
    assert doc.splitlines() and doc.splitlines()[0].strip(), f"{spec.__name__} has no summary line"
    for argument in inspect.signature(spec).parameters:
        assert f":param {argument}:" in doc, f"{spec.__name__} does not document {argument}"
    assert "Return value" in doc
    tests = "".join(read(os.path.join(ROOT, "tests", name)) for name in os.listdir(os.path.join(ROOT, "tests")) if name.startswith("test_"))
    assert f"def {spec.__name__}(" in tests, f"no test plugin implements {spec.__name__}"


@pytest.mark.parametrize(
    "marker, path",
    [
        ("example plugin source", "src/flow2onnx_example_plugin/__init__.py"),
        ("example plugin test", "tests/test_example_plugin.py"),
        ("example plugin pyproject", "pyproject.toml"),
    ],
)
def test_included_example_matches_the_repository(marker, path):
    assert docs_block(marker) == read(os.path.join(EXAMPLE, path))


def docs_block(marker: str) -> str:
    match = re.search(rf"<!-- {marker}: [^>]*-->\n```[a-z]*\n(.*?)```\n<!-- end of {marker} -->", read(DOCS), re.S)
    assert match, f"docs/plugins.md lost its '{marker}' block"
    return match.group(1)


def test_plugin_built_from_the_documentation_alone(tmp_path):
    """A package made only of what docs/plugins.md shows, outside the repository, installs and works."""
    package = tmp_path / "my-plugin"
    module = package / "src" / "flow2onnx_example_plugin"
    module.mkdir(parents=True)
    (package / "pyproject.toml").write_text(docs_block("example plugin pyproject"))
    (module / "__init__.py").write_text(docs_block("example plugin source"))
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(package)]
    subprocess.run(pip, check=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listing = subprocess.run([CLI, "plugins"], capture_output=True, text=True, env=env, timeout=300)
    assert any(line.startswith("example ") for line in listing.stdout.splitlines()), listing.stdout + listing.stderr
    output = tmp_path / "inverse.onnx"
    args = [CLI, "export", "tests.models:uses_inverse", "--input-shape", "2,3,3", "-o", str(output)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "all outputs match" in done.stdout, done.stderr
    output.unlink()
    disabled = subprocess.run(args + ["--disable-plugin", "example"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert disabled.returncode == 1 and "inv: 1 op" in disabled.stderr and not output.exists()


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """The example plugin pip-installed into a throwaway directory, as a user would install it."""
    target = tmp_path_factory.mktemp("site-packages")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), EXAMPLE],
        check=True,
        timeout=600,
    )
    return {**os.environ, "PYTHONPATH": str(target)}


def test_installed_example_plugin_is_listed(example_site):
    done = subprocess.run([CLI, "plugins"], capture_output=True, text=True, env=example_site, timeout=300)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("example "))
    assert row.split()[1:5] == ["flow2onnx-example-plugin", "0.1.0", "1", "example-metadata"]


def test_installed_example_plugin_exports_and_verifies(example_site, tmp_path):
    output = tmp_path / "inverse.onnx"
    args = [CLI, "export", "tests.models:uses_inverse", "--input-shape", "2,3,3", "-o", str(output), "--dynamic-batch"]
    done = subprocess.run(args + ["--post-pass", "example-metadata"], cwd=ROOT, capture_output=True, text=True, env=example_site, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "all outputs match" in done.stdout
    assert {p.key: p.value for p in onnx.load(str(output)).metadata_props}["example_plugin_version"] == "0.1.0"

    output.unlink()
    disabled = subprocess.run(args + ["--disable-plugin", "example"], cwd=ROOT, capture_output=True, text=True, env=example_site, timeout=300)
    assert disabled.returncode == 1
    assert "inv: 1 op" in disabled.stderr and not output.exists()


def test_example_plugins_own_tests_pass(example_site):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.join(EXAMPLE, "tests")],
        cwd=EXAMPLE, capture_output=True, text=True, env=example_site, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
