"""The census of OneFlow's op types: every op type the installed OneFlow registers is in one class.

docs/supported_ops.md is rendered from the census; ``tests/test_ops_cli.py`` keeps it current.
"""

from __future__ import annotations

from flow2onnx.lowering.families import catalogue
from flow2onnx.lowering.families.census import CLASSES, Group, census_problems, classify, groups, registered_op_types


def test_the_registry_is_oneflows_own():
    """Read from OneFlow at run time: the op types every graph has, and as many as OneFlow 0.9 defines."""
    registered = registered_op_types()
    assert {"conv2d", "relu", "matmul", "reshape", "relu_grad", "adam_update", "OFRecordReader"} <= registered
    assert 600 < len(registered) < 800


def test_the_census_classifies_every_registered_op_type_and_names_only_real_ones():
    """Fails when OneFlow registers an op type in no class, or the census names one OneFlow lacks."""
    assert census_problems(registered_op_types(), catalogue()) == []


def test_every_class_but_lowered_gives_a_reason():
    assert {group.cls for group in groups()} <= set(CLASSES[1:])
    assert all(group.reason and group.op_types for group in groups())


def test_lowered_wins_then_a_name_then_the_first_matching_pattern(monkeypatch):
    fake = (
        Group("training", "gradients", ("*_grad",)),
        Group("to do", "named", ("odd_grad",)),
        Group("system", "later pattern", ("*_grad", "io_*")),
    )
    monkeypatch.setattr("flow2onnx.lowering.families.census.groups", lambda: fake)
    entries = classify({"relu", "relu_grad", "odd_grad", "io_read", "other"}, {"flow2onnx-activations": ("relu",)})
    assert (entries["relu"].cls, entries["relu"].family) == ("lowered", "flow2onnx-activations")
    assert entries["relu_grad"].group is fake[0]
    assert entries["odd_grad"].group is fake[1]
    assert entries["io_read"].cls == "system"
    assert entries["other"].cls is None
    problems = census_problems({"relu", "relu_grad", "odd_grad", "other"}, {"flow2onnx-activations": ("relu", "gone")})
    assert problems == [
        "registered by OneFlow and in no class of the census: other",
        "lowered, but OneFlow registers no such op type: gone",
        "pattern *_grad (group 'later pattern') covers no op type",
        "pattern io_* (group 'later pattern') covers no op type",
    ]
