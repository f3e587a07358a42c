"""Progress: the library emits records (never prints); the command draws them on a terminal only."""

from __future__ import annotations

import io
import logging

from flow2onnx.cli import progress as cli_progress
from flow2onnx.progress import LOGGER_NAME, Progress

from .helpers import export_module
from .models import tiny_cnn


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.steps = []

    def emit(self, record):
        self.steps.append(record.progress)


def test_an_export_reports_each_phase_to_whoever_listens(tmp_path, capsys):
    logger, collect = logging.getLogger(LOGGER_NAME), Collect()
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    try:
        export_module(tiny_cnn(), [(2, 3, 8, 8)], tmp_path / "m.onnx", dynamic_batch=True)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(logging.NOTSET)
    phases = [step.phase for step in collect.steps]
    assert [p for i, p in enumerate(phases) if p not in phases[:i]] == ["capture", "lowering", "writing", "checking", "verification"]
    lowering = [step for step in collect.steps if step.phase == "lowering"]
    assert lowering[-1].done == lowering[-1].total == 8 and lowering[-1].unit == "ops"
    assert sum(step.phase == "verification" and "onnxruntime on" in step.detail for step in collect.steps) == 4  # example, two random draws, edge values
    assert capsys.readouterr() == ("", "")


def test_nothing_is_built_when_nobody_listens(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr("flow2onnx.progress.Progress.__init__", lambda self, *a, **k: built.append(a))
    export_module(tiny_cnn(), [(1, 3, 8, 8)], tmp_path / "m.onnx")
    assert built == []


def test_the_status_line_shows_rate_and_is_drawn_only_on_a_terminal(monkeypatch):
    line = cli_progress.StatusLine.render(Progress("writing", 50e6, 200e6, "bytes"), 2.0)
    assert line == "flow2onnx: writing 50.0/200.0 MB (25 MB/s) (2 s)"
    assert cli_progress.StatusLine.render(Progress("lowering", 3000, 20020, "ops"), 1.0) == "flow2onnx: lowering 3000/20020 ops (1 s)"
    not_a_terminal = io.StringIO()
    with cli_progress.status_line(quiet=False, stream=not_a_terminal):
        assert not logging.getLogger(LOGGER_NAME).isEnabledFor(logging.DEBUG)
