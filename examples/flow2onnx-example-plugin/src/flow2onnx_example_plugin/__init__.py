"""An example flow2onnx plugin.

It lowers OneFlow's ``inv`` op (``flow.linalg.inv``, matrix inverse), which standard ONNX cannot
express, to the ``Inverse`` op of ONNX Runtime's own ``com.microsoft`` domain, and registers a
post-pass named ``example-metadata`` that records where the model came from in its metadata.
"""

from flow2onnx.plugin import Lowerings, hookimpl

__version__ = "0.1.0"

#: This plugin's lowerings, each registered where it is defined.
LOWERINGS = Lowerings()


@LOWERINGS.op("inv", since_opset=9)  # Inverse needs nothing newer than opset 9
def lower_inv(ctx, op):
    """Inverse of each square matrix in the last two dimensions."""
    if ctx.dtype(op.input("x")).kind != "f":
        raise ctx.error("com.microsoft Inverse takes floating-point matrices only")
    ctx.make_node("Inverse", [op.input("x")], [op.output("y")], domain="com.microsoft", domain_version=1)


def add_metadata(model):
    """Record the exporter and this plugin's version in the model's metadata."""
    entries = {prop.key: prop for prop in model.metadata_props}
    for key, value in (("converted_from", "oneflow"), ("example_plugin_version", __version__)):
        prop = entries.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value
    return model


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)


@hookimpl
def flow2onnx_register_post_passes(register):
    register("example-metadata", add_metadata)
