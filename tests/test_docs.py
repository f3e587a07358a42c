"""The documentation site builds with warnings as errors, and every Python example it shows runs.

The site is ``mkdocs.yml`` over ``docs/``; the examples are the ```` ```python ```` blocks of
README.md and of every page of ``docs/``. A block is left out only when the line before it says why,
as ``<!-- not run: needs a GPU -->``.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
MKDOCS = pathlib.Path(sys.executable).parent / "mkdocs"

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"^<!-- not run: (.*\S.*) -->$")

#: Pages of the site, by the path of their source under docs/ and the file mkdocs writes for them.
KEY_PAGES = {
    "index.md": "index.html",
    "installation.md": "installation/index.html",
    "guide/exporting.md": "guide/exporting/index.html",
    "guide/capture.md": "guide/capture/index.html",
    "guide/dynamic-axes.md": "guide/dynamic-axes/index.html",
    "guide/verification.md": "guide/verification/index.html",
    "guide/divergence.md": "guide/divergence/index.html",
    "cli.md": "cli/index.html",
    "runtime.md": "runtime/index.html",
    "plugins-overview.md": "plugins-overview/index.html",
    "plugins.md": "plugins/index.html",
    "reference/flow2onnx.md": "reference/flow2onnx/index.html",
    "reference/runtime.md": "reference/runtime/index.html",
    "reference/plugin.md": "reference/plugin/index.html",
    "benchmarks/index.md": "benchmarks/index.html",
    "supported_ops.md": "supported_ops/index.html",
}


def pages() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def python_blocks() -> list[tuple[str, int, str, str | None]]:
    """(page, line, code, reason it is not run or None) of every Python block of every page."""
    blocks = []
    for page in pages():
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) != "python":
                continue
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            skipped = NOT_RUN.match(before)
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((str(page.relative_to(ROOT)), line, match.group(2), skipped.group(1) if skipped else None))
    return blocks


BLOCKS = python_blocks()


# ---- the site ----


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built by the venv's ``mkdocs`` command, as the README says, from outside the project."""
    assert MKDOCS.exists(), f"no {MKDOCS}: install the test extra (pip install -e '.[test]'), which brings MkDocs"
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=tmp_path_factory.mktemp("elsewhere"), capture_output=True, text=True, timeout=300,
    )
    return out, done


def test_site_builds_with_warnings_as_errors(site):
    out, done = site
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    # Strict mode counts MkDocs' own warnings; this also catches any from griffe or mkdocstrings.
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "\n".join(warnings)


@pytest.mark.parametrize("source, built", KEY_PAGES.items(), ids=list(KEY_PAGES))
def test_key_page_is_built(site, source, built):
    out, _ = site
    assert (DOCS / source).exists()
    assert (out / built).is_file(), f"the site lacks {built} (from docs/{source})"


def html(site, built: str) -> str:
    out, done = site
    assert done.returncode == 0, done.stdout + done.stderr
    return (out / built).read_text()


@pytest.mark.parametrize(
    "built, anchors",
    [
        ("reference/flow2onnx/index.html", ["flow2onnx.export", "flow2onnx.ExportResult", "flow2onnx.convert_to_onnx_and_check", "flow2onnx.export_onnx_model", "flow2onnx.errors.VerificationError", "flow2onnx.errors.UnsupportedOpsError"]),
        ("reference/runtime/index.html", ["flow2onnx.runtime.model.Model", "flow2onnx.runtime.model.Model.run", "flow2onnx.runtime.model.describe", "flow2onnx.runtime.imaging.preprocess_image", "flow2onnx.runtime.imaging.top_k"]),
        ("reference/plugin/index.html", ["flow2onnx.plugin.Lowerings", "flow2onnx.plugin.Lowerings.op", "flow2onnx.plugin.LoweringContext.make_node", "flow2onnx.plugin.hookimpl", "flow2onnx.testing.check_export"]),
    ],
    ids=["flow2onnx", "runtime", "plugin"],
)
def test_api_reference_documents_the_public_names(site, built, anchors):
    page = html(site, built)
    missing = [anchor for anchor in anchors if f'id="{anchor}"' not in page]
    assert not missing, f"{built} documents none of {missing}"


def test_export_reference_has_the_options_written_at_import_time(site):
    """``flow2onnx.export``'s docstring and signature are made from its options when its module loads."""
    page = html(site, "reference/flow2onnx/index.html")
    export = page[page.index('id="flow2onnx.export"') : page.index('id="flow2onnx.ExportResult"')]
    for option in ("dynamic_axes", "external_data", "capture", "isolate"):
        assert f"<code>{option}</code>" in export, f"the reference of flow2onnx.export does not describe {option}"
    assert "make dim 0 of every input and output symbolic" in export
    # ExportResult's fields are documented by #: comments.
    assert "OneFlow op type -&gt; number of ops of that type in the graph." in page


def test_api_reference_has_no_raw_sphinx_roles(site):
    for built in ("reference/flow2onnx/index.html", "reference/runtime/index.html", "reference/plugin/index.html"):
        leftovers = re.findall(r":(?:class|meth|func|attr|mod|data|exc):<code>[^<]*", html(site, built))
        assert not leftovers, f"{built} shows Sphinx roles as text: {leftovers[:5]}"


@pytest.mark.parametrize("result", sorted(RESULTS.glob("*.md")), ids=lambda path: path.name)
def test_every_benchmark_result_is_a_page(site, result):
    """Each file of benchmarks/results/ is included, as it is, in a page of the site."""
    wrapper = DOCS / "benchmarks" / result.name
    assert wrapper.exists(), f"add docs/benchmarks/{result.name} (and its nav entry) for {result.relative_to(ROOT)}"
    assert f'--8<-- "benchmarks/results/{result.name}"' in wrapper.read_text()
    title = result.read_text().splitlines()[0].lstrip("# ").strip()
    built = html(site, f"benchmarks/{result.stem}/index.html")
    assert title.split(":")[0] in built, f"the page for {result.name} does not show its heading {title!r}"


# ---- the examples ----


def test_the_pages_have_examples_to_run():
    run = [(page, line) for page, line, _, reason in BLOCKS if reason is None]
    assert any(page == "README.md" for page, _ in run), "README.md lost its Python example"
    assert len({page for page, _ in run}) >= 10, f"Python examples on too few pages: {run}"


@pytest.mark.parametrize("page, line, code, reason", BLOCKS, ids=[f"{page}:{line}" for page, line, _, _ in BLOCKS])
def test_python_block_runs(page, line, code, reason, tmp_path):
    """Each block runs in a fresh interpreter, in an empty directory, and exits with status 0."""
    if reason is not None:
        pytest.skip(f"{page}:{line} is marked not run: {reason}")
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, f"{page}:{line} exited with status {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
