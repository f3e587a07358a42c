"""Built-in lowering plugins, one module per OneFlow op family.

Each module is a plugin like any third-party one: it implements ``flow2onnx_register_lowerings``
and is loaded from ``flow2onnx.lowering.plugin_manager.BUILTIN_PLUGINS``.
"""
