"""The plugin author documentation stays true: the generated references, the included example, every code block."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys

import onnx
import pytest

from tools import plugin_docs
from flow2onnx.lowering.context import LoweringContext
from flow2onnx.lowering.graph import FlowOp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "plugins.md")
EXAMPLE = os.path.join(ROOT, "examples", "flow2onnx-example-plugin")
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")


def read(path):
    with open(path) as file:
        return file.read()


def test_generated_references_are_current():
    """The hook reference and the lowering API reference match the docstrings they come from."""
    text = read(DOCS)
    assert plugin_docs.update(text) == text, "run: python -m tools.plugin_docs docs/plugins.md"


@pytest.mark.parametrize(
    "heading",
    [
        "ctx.make_node(op_type, inputs, outputs=None, *, domain='', domain_version=1, **attributes) -> list[str]",
        "ctx.constant(value, hint='const', dtype=None, shared=False) -> str",
        "ctx.shape(name) -> tuple[int, ...]",
        "ctx.dtype(name) -> np.dtype",
        "ctx.rank(name) -> int",
        "ctx.variant_attr(op, name) -> Any",
        "ctx.variant_shape(name) -> tuple[int, ...] | None",
        "ctx.dynamic_batch -> bool",
        "ctx.dynamic_axes -> dict[str, dict[int, str]]",
        "ctx.error(reason) -> LoweringError",
        "ctx.is_read(name) -> bool",
        "op.input(arg, index=0) -> str",
        "op.output(arg, index=0) -> str",
        "op.attr(name) -> Any",
        "OpSchema(op_type, inputs, outputs, attrs)",
    ],
)
def test_api_reference_documents_what_a_lowering_uses(heading):
    assert f"`{heading}`" in read(DOCS)


@pytest.mark.parametrize("cls", [LoweringContext, FlowOp], ids=lambda cls: cls.__name__)
def test_every_public_member_has_a_docstring_in_the_reference(cls):
    members = plugin_docs.api_members(cls)
    assert members
    for name, value in members:
        function = value.fget if isinstance(value, property) else value
        assert (function.__doc__ or "").strip(), f"{cls.__name__}.{name} has no docstring"
    make_node = inspect.getdoc(LoweringContext.make_node)
    for argument in ("inputs", "outputs", "domain", "attributes"):
        assert f":param {argument}:" in make_node


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


# ---- every code block of docs/plugins.md runs ----

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
MARKER = re.compile(r"^<!-- (.*) -->$")


def doc_blocks():
    """(marker, language, body, line number) of every fenced block; the marker is the comment on the line before."""
    text = read(DOCS)
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.match(before)
        yield (marker.group(1) if marker else None), match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1


def blocks_of(kind: str) -> list:
    return [block for block in doc_blocks() if block[0] and block[0].startswith(kind)]


def test_every_code_block_is_run_by_a_test():
    """A block must be an included file, a file, a Python snippet, a shell session or a command's output."""
    kinds = ("example plugin ", "docs test: file ", "docs test: python", "docs test: shell", "docs test: output of `")
    unmarked = [f"line {line}: {marker or 'no marker'}" for marker, _, _, line in doc_blocks() if not (marker and marker.startswith(kinds))]
    assert not unmarked, f"docs/plugins.md has code blocks no test runs: {unmarked}"
    assert len(blocks_of("docs test: output of")) >= 2 and blocks_of("docs test: shell") and blocks_of("docs test: python")


@pytest.fixture
def doc_directory(tmp_path):
    """A working directory holding the files the documentation creates (mymodels.py)."""
    for marker, _, body, _ in blocks_of("docs test: file "):
        (tmp_path / marker.split("docs test: file ", 1)[1].strip()).write_text(body)
    return tmp_path


def cli(command: str, cwd, env=None):
    args = shlex.split(command)
    assert args[0] == "flow2onnx", f"the documentation runs {args[0]}, which this test does not know"
    return subprocess.run([CLI] + args[1:], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def assert_shown_lines_appear(shown: str, output: str):
    """Each line shown appears in ``output``, in order; ``…`` stands for any text, runs of spaces for any spaces."""
    lines = [" ".join(line.split()) for line in output.splitlines()]
    position = 0
    for want in filter(None, (line.rstrip() for line in shown.splitlines())):
        pattern = re.compile(".*".join(re.escape(" ".join(part.split())) for part in want.split("…")))
        found = next((index for index in range(position, len(lines)) if pattern.fullmatch(lines[index])), None)
        assert found is not None, f"the documentation shows {want!r}, which the output lacks after line {position}:\n{output}"
        position = found + 1


@pytest.mark.parametrize("block", blocks_of("docs test: python"), ids=lambda block: f"line {block[3]}")
def test_docs_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block[2], f"docs/plugins.md:{block[3]}", "exec"), {"__name__": "docs_snippet"})


@pytest.mark.parametrize("block", blocks_of("docs test: output of"), ids=lambda block: f"line {block[3]}")
def test_docs_output_is_what_the_command_prints(block, doc_directory):
    """Before the example plugin is installed, as the tutorial runs them."""
    command = block[0].split("`")[1]
    done = cli(command, doc_directory)
    assert_shown_lines_appear(block[2], done.stdout + done.stderr)


def test_docs_shell_session_runs_with_the_example_plugin(example_site, doc_directory):
    """The install-and-use session: exit codes, and the texts its comments quote."""
    ((_, _, session, _),) = blocks_of("docs test: shell")
    for line in session.strip().splitlines():
        command, _, comment = line.partition("#")
        if command.startswith("pip install "):
            # example_site installed this very package with pip, into a throwaway directory.
            assert os.path.realpath(os.path.join(ROOT, command.split()[-1])) == os.path.realpath(EXAMPLE)
            continue
        done = cli(command, doc_directory, env=example_site)
        fails = comment.strip().startswith("fails")
        assert (done.returncode != 0) == fails, f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        for quoted in re.findall(r'"([^"]*)"', comment):
            assert " ".join(quoted.split()) in " ".join((done.stdout + done.stderr).split()), f"{command}: no {quoted!r} in\n{done.stdout}{done.stderr}"
    metadata = {prop.key: prop.value for prop in onnx.load(str(doc_directory / "inverse.onnx")).metadata_props}
    assert metadata["example_plugin_version"] == "0.1.0"
