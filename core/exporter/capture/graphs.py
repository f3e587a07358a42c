"""The capture step: compiling the model when needed, and reading the compiled OneFlow ``nn.Graph``
into a plain, ONNX-named view of its ops.

The compiled job proto lists every op in execution order; each tensor is named by its "lbn"
(``op_name/arg_index``), and ``job.helper.lbn2logical_blob_desc`` gives its static shape and
data type. Weights are not in the proto: variable ops are named after the module path of the
parameter, so their values come from ``graph.state_dict()`` in memory, read only when written.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import re
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..._oneflow import error_text, import_oneflow, quiet_native_output
from ...errors import InvalidModelError
from ...lowering.graph import FlowGraph, FlowOp, Provenance, TensorInfo
from ...lowering.schema import ATTR_TYPES, binding_key, schemas_of_bindings
from ..weights import StateWeights
from .nested import is_shape, rebuild

log = logging.getLogger("flow2onnx")

# OneFlow DataType enum names -> numpy dtypes (only those ONNX can carry).
_FLOW_DTYPES = {
    "kFloat": np.float32,
    "kDouble": np.float64,
    "kFloat16": np.float16,
    "kInt8": np.int8,
    "kChar": np.int8,
    "kInt16": np.int16,
    "kInt32": np.int32,
    "kInt64": np.int64,
    "kUInt8": np.uint8,
    "kBool": np.bool_,
}


def attribute_value(value) -> Any:
    """Turn a OneFlow ``AttrValue`` into a plain Python value (lists stay lists, shapes become tuples)."""
    return _value_of(value, value.WhichOneof("value"))


#: AttrValue fields whose value is a plain Python value as protobuf returns it.
_SCALAR_KINDS = frozenset({"at_int32", "at_int64", "at_bool", "at_float", "at_double", "at_string"})


def _value_of(value, kind: str | None) -> Any:
    """The plain Python value of ``value``, an ``AttrValue`` whose set field is ``kind``."""
    if kind is None:
        return None
    raw = getattr(value, kind)
    if kind in _SCALAR_KINDS:
        return raw
    if kind in ("at_shape", "at_stride"):
        return tuple(raw.dim)
    if kind == "at_data_type":
        return _numpy_dtype(raw)
    if kind == "at_list_shape" or kind == "at_list_stride":
        return [tuple(item.dim) for item in raw.val]
    if kind == "at_list_data_type":
        return [_numpy_dtype(item) for item in raw.val]
    if kind.startswith("at_list_"):
        return list(raw.val)
    return raw


@functools.lru_cache(maxsize=None)
def _numpy_dtype(flow_data_type: int) -> np.dtype | None:
    from oneflow.core.common import data_type_pb2

    name = data_type_pb2.DataType.Name(flow_data_type)
    dtype = _FLOW_DTYPES.get(name)
    return np.dtype(dtype) if dtype is not None else None


def _flatten_state(state, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten_state(value, name + ".")
        else:
            yield name, value


def wrap_module(module, example_inputs: Sequence, tree=None):
    """Wrap an eager ``nn.Module`` in an ``nn.Graph`` and compile it on ``example_inputs``: flat
    tensors, which ``build`` puts back in their places in the module's arguments where ``tree`` (an
    :class:`~.nested.InputTree`) says the example nested them.

    A module in training mode is switched to eval mode with a warning: an export describes inference.
    Stride-0 views the modules hold as plain tensors are compiled as contiguous copies (see
    :mod:`flow2onnx.compile_guard`).
    """
    flow = import_oneflow()
    for_inference(module)

    class ExportGraph(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = module

        def build(self, *args):
            return self.model(*rebuild(tree, args))

    graph = ExportGraph()
    # Plain attributes: nn.Graph.__setattr__ would wrap a module in a proxy bound to this graph.
    object.__setattr__(graph, "_flow2onnx_name", type(module).__name__)
    object.__setattr__(graph, "_flow2onnx_module", module)
    object.__setattr__(graph, "_flow2onnx_tree", tree)
    compile_graph(graph, example_inputs)  # stride-0 views are protected by the compile guard
    return graph


def for_inference(module) -> None:
    """Put ``module`` in eval mode, with a warning when it was training: an export describes inference."""
    if module.training:
        warnings.warn(
            f"{type(module).__name__} was in training mode; flow2onnx switched it to eval mode for export "
            "(call module.eval() first to silence this warning)",
            stacklevel=4,
        )
        module.eval()


def recompile_graph(graph, example_inputs: Sequence):
    """A new graph of ``graph``'s class over the same modules and attributes, compiled on ``example_inputs``.

    The class's ``__init__`` is not run again (it may take arguments): the new graph gets the
    modules of the compiled one and its plain attributes, then ``build`` traces as it did.
    """
    flow = import_oneflow()
    cls = type(graph)
    again = cls.__new__(cls)
    flow.nn.Graph.__init__(again)
    for name, block in graph._blocks.items():
        setattr(again, name, block.to(flow.nn.Module))
    for name, value in vars(graph).items():
        if not name.startswith("_") and name not in vars(again):
            object.__setattr__(again, name, value)
    compile_graph(again, example_inputs)
    return again


class _EagerBuild:
    """Stands in for a compiled user graph so that its class's ``build`` runs eagerly.

    Attribute reads give the graph's original modules (not their graph proxies) and plain
    attributes; methods of the graph's class are bound to this stand-in, so ``build`` may call
    its own helpers.
    """

    def __init__(self, graph):
        flow = import_oneflow()
        state = {name: block.to(flow.nn.Module) for name, block in graph._blocks.items()}
        for name, value in vars(graph).items():
            if not name.startswith("_") and name not in state:
                state[name] = value
        state["_flow2onnx_class"] = type(graph)
        self.__dict__.update(state)

    def __getattr__(self, name):
        cls = self.__dict__["_flow2onnx_class"]
        value = inspect.getattr_static(cls, name)  # AttributeError when the class has none
        # Methods and properties are bound to the stand-in, as they would be to the graph.
        return value.__get__(self, cls) if hasattr(value, "__get__") else value


def run_build_eagerly(graph, tensors: Sequence):
    """Run a compiled user graph's ``build`` eagerly over its own modules, on ``tensors`` of any size.

    The same Python code over the same modules as the compiled graph, but as eager OneFlow ops: no
    compiled job is launched (OneFlow 0.9 can crash when one compiled graph is launched many times
    in a process), and a batch of any size runs in one call. Raises what ``build`` raises when it
    needs the graph itself (``self.config``, graph-only calls); callers then run the compiled graph.
    """
    flow = import_oneflow()
    with flow.no_grad():
        return type(graph).build(_EagerBuild(graph), *tensors)


def compile_graph(graph, example_inputs: Sequence) -> None:
    with quiet_native_output():
        graph._compile(*example_inputs)


def example_tensors(example_inputs) -> list | None:
    """The example inputs as a list of OneFlow tensors (numpy arrays converted), checked one by one.

    :raises InvalidModelError: for anything that is not a tensor or an array, naming its position;
        a tuple of integers gets told to become a tensor of that shape.
    """
    flow = import_oneflow()
    if example_inputs is None:
        return None
    if isinstance(example_inputs, (flow.Tensor, np.ndarray)):
        example_inputs = [example_inputs]
    if is_shape(example_inputs):
        raise _shape_given(example_inputs, "example_inputs")
    if not isinstance(example_inputs, (list, tuple)):
        raise InvalidModelError(
            f"example_inputs must be a list of tensors (or numpy arrays), one per input of the model; got a "
            f"{type(example_inputs).__name__}"
        )
    tensors = []
    for index, value in enumerate(example_inputs):
        if isinstance(value, np.ndarray):
            value = flow.tensor(value)
        elif is_shape(value):
            raise _shape_given(value, f"example_inputs[{index}]")
        elif not isinstance(value, flow.Tensor):
            raise InvalidModelError(
                f"example_inputs[{index}] is a {type(value).__name__}, not a tensor: pass oneflow tensors or numpy "
                "arrays, one per input of the model"
            )
        if value.numel() == 0:
            # OneFlow 0.9 aborts the whole process (SIGABRT) compiling or capturing on an empty tensor.
            raise InvalidModelError(
                f"example_inputs[{index}] has shape {tuple(value.shape)}, with no elements: OneFlow 0.9 cannot compile or "
                "capture a model on an empty tensor (it aborts the process). Pass an example with at least one element "
                "on every axis, and make the axis dynamic (dynamic_axes) if the model must take other sizes"
            )
        tensors.append(value)
    return tensors


def _shape_given(shape, where: str) -> InvalidModelError:
    dims = ", ".join(str(int(v)) for v in shape)
    return InvalidModelError(
        f"{where} is the shape ({dims}), not a tensor: flow2onnx runs the model once on real inputs; pass "
        f"flow.rand({dims}) (or an array of that shape) instead"
    )


def as_compiled_graph(model, inputs: Sequence | None, tree=None):
    """``model`` as a compiled ``nn.Graph``: compiled on ``inputs`` (tensors), or an eager module wrapped in one.

    :raises InvalidModelError: when OneFlow cannot build the graph on those inputs (wrong count,
        shape or dtype), with OneFlow's own last words and what the model takes.
    """
    flow = import_oneflow()
    if isinstance(model, flow.nn.Graph):
        if getattr(model, "_is_compiled", False):
            return model
        if inputs is None:
            raise InvalidModelError(
                f"the nn.Graph {type(model).__name__} is not compiled: pass example_inputs, or call "
                "graph._compile(*example_inputs) before exporting"
            )
        with rejected_inputs(model, model.build, inputs):
            compile_graph(model, inputs)
        return model
    if isinstance(model, flow.nn.Module):
        if inputs is None:
            raise InvalidModelError(
                f"exporting the module {type(model).__name__} needs example_inputs: the tensors it is run on once to "
                "build the graph, e.g. export(module, [flow.rand(1, 3, 224, 224)])"
            )
        with rejected_inputs(model, model.forward, inputs):
            return wrap_module(model, inputs, tree)
    raise InvalidModelError(
        f"cannot export a {type(model).__module__}.{type(model).__name__}: pass a oneflow.nn.Graph or a "
        "oneflow.nn.Module with example_inputs"
    )


@contextlib.contextmanager
def rejected_inputs(model, function, inputs):
    """Turn OneFlow's failure to run ``model`` on ``inputs`` into one message naming both."""
    try:
        yield
    except InvalidModelError:
        raise
    except Exception as error:
        given = ", ".join(f"{tuple(t.shape)} {str(t.dtype).replace('oneflow.', '')}" for t in inputs) or "none"
        missing = _missing_kernel(str(error))
        if missing:
            raise InvalidModelError(
                f"OneFlow has no {missing} kernel, so it cannot build {type(model).__name__} as a graph on the "
                f"example inputs [{given}]; export it in a dtype OneFlow has that kernel for (float32 has them all)"
            ) from error
        try:
            takes = str(inspect.signature(function))
        except (TypeError, ValueError):
            takes = "(…)"
        raise InvalidModelError(
            f"OneFlow could not run {type(model).__name__} on the example inputs [{given}] ({error_text(error)}); "
            f"pass one tensor per argument of {function.__name__}{takes}, of the shape and dtype the model expects"
        ) from error


def _missing_kernel(text: str) -> str | None:
    """'as_strided CPU float16' from OneFlow's "Cannot find the kernel matching" error, else None."""
    if "Cannot find the kernel matching" not in text:
        return None
    op_type = re.search(r"op_type_name: (\w+)", text)
    device = re.search(r"DeviceType_Name: k(\w+)", text)
    dtypes = sorted(set(re.findall(r"DataType_Name of \w+: k(\w+)", text)))
    if not op_type:
        return None
    words = [op_type.group(1), device.group(1).upper() if device else ""] + [d.lower() for d in dtypes]
    return " ".join(word for word in words if word)


#: Op types whose OneFlow 0.9 CPU kernel is a ``TODO()`` that aborts the process (SIGABRT, which no
#: ``except`` can catch) instead of raising: ``oneflow/user/kernels/layer_norm_cpu_kernel.cpp`` at
#: v0.9.0, found by reading every CPU kernel there for ``TODO()`` and ``UNIMPLEMENTED()`` (the
#: others are branches on attributes OneFlow checks first). Each maps to what runs instead.
ABORTING_ON_CPU = {
    "layer_norm": "nn.LayerNorm or F.layer_norm, which OneFlow builds from reductions on the CPU, instead of flow._C.layer_norm",
}


#: The ``oneflow._C`` functions that make those ops, by name: eager capture runs each call eagerly.
ABORTING_CALLS_ON_CPU = {"layer_norm": "layer_norm", "layer_norm_affine": "layer_norm"}


#: Ops whose OneFlow 0.9 kernels abort the process (SIGABRT) on an empty input or output, as a
#: convolution with a kernel larger than its (unpadded) input makes: measured for each, where pooling,
#: matmul and slices of empty tensors run. Found by the fuzzer (6:3000).
ABORTING_ON_EMPTY = frozenset({"conv1d", "conv2d", "conv3d", "deconv1d", "deconv2d", "deconv3d"})


def empty_aborting_op(graph: FlowGraph) -> str | None:
    """The first op of ``graph`` that OneFlow would abort on, an op of :data:`ABORTING_ON_EMPTY` that
    reads or makes an empty tensor at the graph's sizes (``"conv2d op 'm' makes [1, 8, 0, 0]"``), or ``None``."""
    for op in graph.ops:
        if op.type not in ABORTING_ON_EMPTY:
            continue
        for verb, bound in (("reads", op.inputs), ("makes", op.outputs)):
            for name in (name for names in bound.values() for name in names):
                info = graph.tensors.get(name)
                if info is not None and 0 in tuple(info.shape):
                    return f"{op.type} op {op.name!r} {verb} {list(info.shape)}"
    return None


def refuse_unrunnable(graph: FlowGraph, doing: str) -> None:
    """Raise before OneFlow runs ``graph`` on the CPU (eagerly or compiled) where one of its ops would
    abort the process there; ``doing`` says what needed the run."""
    if graph.source.input_layouts and all(placement.type == "cuda" for placement, _ in graph.source.input_layouts):
        return
    empty = empty_aborting_op(graph)
    if empty is not None:
        raise InvalidModelError(
            f"OneFlow 0.9 aborts the process running a convolution on an empty tensor, and at the example's sizes {empty} "
            f"(a kernel larger than its input). {doing} needs OneFlow to run the model: give an example large enough that "
            "every convolution has an output, and make the axis dynamic (dynamic_axes) for other sizes"
        )
    types = graph.op_types()
    found = sorted(set(types) & ABORTING_ON_CPU.keys())
    if found:
        raise _aborting(", ".join(f"{name} ({types[name]}x)" for name in found), found, doing, "export with verify=False and static shapes (then nothing checks the file)")


def refuse_aborting_call(label: str, tensors: Sequence) -> None:
    """Raise before an eager call of the ``oneflow._C`` function ``label`` on CPU ``tensors`` that
    would abort the process (eager capture runs every call of the module)."""
    op_type = ABORTING_CALLS_ON_CPU.get(label)
    if op_type and any(not t.is_cuda for t in tensors):
        raise _aborting(f"{op_type} (called as flow._C.{label})", [op_type], "Eager capture", "capture the model as a graph (capture='graph')")


def _aborting(ops: str, op_types: Sequence[str], doing: str, otherwise: str) -> InvalidModelError:
    fixes = "; ".join(ABORTING_ON_CPU[name] for name in op_types)
    return InvalidModelError(
        f"OneFlow 0.9 cannot run {ops} on the CPU: its CPU kernel is not implemented and aborts the process. "
        f"{doing} needs OneFlow to run the model. Use {fixes}; or {otherwise}"
    )


def read_graph(graph) -> FlowGraph:
    """Read a compiled ``nn.Graph`` into a :class:`FlowGraph` with ONNX tensor names.

    Graph inputs are named ``input`` (``input_0``, ``input_1``, … when there are several; their paths,
    ``hx.0``, where the example nested them), outputs
    ``output``/``output_N`` in the order OneFlow flattens the graph's return value; parameters keep
    their module path (``layer1.0.conv1.weight``); other tensors keep OneFlow's names.
    """
    if not getattr(graph, "_is_compiled", False):
        raise InvalidModelError(
            f"the nn.Graph {type(graph).__name__} is not compiled yet: call graph._compile(*example_inputs) "
            "(or run it once) before exporting, or pass example_inputs to flow2onnx.export"
        )
    job = graph._full_job_proto
    ops = _ops_by_kind(job)
    tree = getattr(graph, "_flow2onnx_tree", None)
    return graph_from_job(
        job,
        ops,
        input_names=None if tree is None else tree.names,
        # The class name, not OneFlow's job name: that one carries a per-process counter (ExportGraph_3).
        name=getattr(graph, "_flow2onnx_name", None) or type(graph).__name__,
        read_weight=_weight_reader(graph),
        source=Provenance(
            flow_graph=graph,
            eager_module=getattr(graph, "_flow2onnx_module", None),
            input_layouts=_input_layouts(graph, job, ops["input_conf"]),
            find_module=_module_finder(graph),
            input_tree=tree,
        ),
    )


def graph_from_job(job, ops: dict[str, list] | None = None, input_names: Sequence[str] | None = None, **facts) -> FlowGraph:
    """A :class:`FlowGraph` of an OneFlow job proto's ops and tensors, under ONNX names; ``ops``: the job's
    ops by kind, when the caller has them (:func:`_ops_by_kind`); ``input_names``: the inputs' names, in
    order (default ``input``, ``input_N``); ``facts`` are the :class:`FlowGraph` fields that do not come
    from the job (``name``, ``read_weight``, ``source``)."""
    blob_descs = job.helper.lbn2logical_blob_desc
    ops = ops or _ops_by_kind(job)

    onnx_name: dict[str, str] = {}
    inputs = []
    for index, op in enumerate(ops["input_conf"]):
        lbn = f"{op.name}/{op.input_conf.out}"
        onnx_name[lbn] = input_names[index] if input_names else _numbered("input", len(ops["input_conf"]), index)
        inputs.append(_tensor_info(onnx_name[lbn], blob_descs[lbn], lbn))
    variables = []
    for op in ops["variable_conf"]:
        lbn = f"{op.name}/{op.variable_conf.out}"
        onnx_name[lbn] = op.name
        variables.append(_tensor_info(op.name, blob_descs[lbn], lbn))

    flow_ops = _flow_ops(ops["user_conf"], onnx_name, {info.name for info in variables})
    tensors = {info.name: info for info in inputs + variables}
    for flow_op in flow_ops:
        for lbns in flow_op.outputs.values():
            for lbn in lbns:
                tensors[lbn] = _tensor_info(lbn, blob_descs[lbn], lbn)
    outputs, output_sources = _outputs(ops["output_conf"], onnx_name, tensors, blob_descs)
    return FlowGraph(
        ops=flow_ops,
        inputs=inputs,
        outputs=outputs,
        tensors=tensors,
        variables=variables,
        output_sources=output_sources,
        **facts,
    )


def _input_layouts(graph, job, input_ops) -> tuple | None:
    """For a graph built on global tensors (placement and SBP, as LiBai builds every model): each
    input's ``(placement, sbp)``, read from the compiled job, so that OneFlow can be run on inputs laid
    out as the graph takes them. ``None`` for a graph of local tensors."""
    if not getattr(graph, "_is_global_view", False):
        return None
    flow = import_oneflow()
    from google.protobuf import text_format

    confs = {name: group.parallel_conf for group in job.placement.placement_group for name in group.op_set.op_name}
    layouts = []
    for op in input_ops:
        placement = flow.placement(text_format.MessageToString(confs[op.name]))
        layouts.append((placement, tuple(_sbp(flow, sbp) for sbp in op.input_conf.blob_conf.nd_sbp.sbp_parallel)))
    return tuple(layouts)


def _sbp(flow, sbp_parallel):
    kind = sbp_parallel.WhichOneof("parallel_type")
    if kind == "split_parallel":
        return flow.sbp.split(sbp_parallel.split_parallel.axis)
    if kind == "partial_sum_parallel":
        return flow.sbp.partial_sum
    return flow.sbp.broadcast


def flow_inputs(graph: FlowGraph, arrays: Sequence[np.ndarray]) -> list:
    """OneFlow tensors holding ``arrays``, laid out as ``graph``'s inputs: local, or global tensors of the
    graph's placement and SBP (whose logical value is the array)."""
    flow = import_oneflow()
    if not graph.source.input_layouts:
        return [flow.tensor(np.ascontiguousarray(a)) for a in arrays]
    return [flow.tensor(np.ascontiguousarray(a), placement=p, sbp=s) for a, (p, s) in zip(arrays, graph.source.input_layouts)]



def flatten_outputs(value) -> list:
    """OneFlow's return value flattened in the order the graph's output ops were made."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in flatten_outputs(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten_outputs(item)]
    # None (e.g. GoogLeNet's absent auxiliary outputs in eval mode) makes no graph output.
    return [] if value is None else [value]


def _module_finder(graph) -> Callable[[str], Any]:
    """A function from an op scope (``model.rnn``) to the module behind it, or ``None``.

    A scope's first name is an attribute of the graph (``model`` for a module flow2onnx wrapped),
    which ``nn.Graph`` keeps as a proxy of the module; the rest follow the modules' own children.
    """
    flow = import_oneflow()

    def find(scope: str):
        head, *path = scope.split(".")
        block = graph._blocks.get(head)
        if block is None:
            return None
        module = block.to(flow.nn.Module)
        for name in path:
            module = module._modules.get(name)
            if module is None:
                return None
        return module

    return find


def _ops_by_kind(job) -> dict[str, list]:
    """The job's ops grouped by kind (input, output, variable, user), in execution order."""
    ops: dict[str, list] = {"input_conf": [], "output_conf": [], "variable_conf": [], "user_conf": []}
    others = []
    for op in job.net.op:
        ops.get(op.WhichOneof("op_type"), others).append(op)
    if others:
        kinds = sorted({op.WhichOneof("op_type") for op in others})
        raise InvalidModelError(
            f"the graph contains system ops ({', '.join(kinds)}, e.g. {others[0].name!r}) that only training "
            "graphs use; export a graph built for inference (no optimizer added, module in eval mode)"
        )
    return ops


def _numbered(stem: str, count: int, index: int) -> str:
    return stem if count == 1 else f"{stem}_{index}"


def _flow_ops(user_ops, onnx_name: dict[str, str], weights: set[str] = frozenset()) -> list[FlowOp]:
    """The user ops as FlowOps, each with the schema of its type as the graph shows it.

    Each op's conf is read once, in one pass: every field read from OneFlow's protobuf costs
    microseconds, and maps are read by key (their ``items()`` is a generator in Python around the
    same lookups). Ops of a type that bind the same arguments and have the same attributes say the
    same thing about its schema, so only the first of each such shape goes to the schema.
    """
    rename = onnx_name.get
    read = []
    shapes: dict[tuple, tuple] = {}
    views: set[str] = set()
    for op in user_ops:
        conf = op.user_conf
        op_type = conf.op_type_name
        attr_map, input_map, output_map = conf.attr, conf.input, conf.output
        if op_type == "assign" and _assigned(input_map, rename, onnx_name, weights | views):
            continue
        if op_type in VIEW_OPS:
            views.update(name for arg in output_map for name in output_map[arg].s)
        attrs, kinds = {}, []
        for key in attr_map:
            value = attr_map[key]
            kind = value.WhichOneof("value")
            attrs[key] = _value_of(value, kind)
            kinds.append(kind)
        inputs = {}
        for arg in input_map:
            names = input_map[arg].s
            inputs[arg] = [rename(name, name) for name in names]
        outputs = {arg: list(output_map[arg].s) for arg in output_map}
        shape = (op_type, binding_key(inputs, outputs, (tuple(attrs), tuple(kinds))))
        if shape not in shapes:
            shapes[shape] = (op_type, inputs, outputs, {name: ATTR_TYPES.get(kind, "unknown") for name, kind in zip(attrs, kinds)})
        read.append((op.name, op_type, inputs, outputs, attrs))
    schemas = schemas_of_bindings(shapes.values())
    made = FlowOp._made
    return [made(name, op_type, inputs, outputs, attrs, schemas[op_type]) for name, op_type, inputs, outputs, attrs in read]


#: OneFlow ops whose output is a view of their input in eager mode: a write into it (``y[:, :2].copy_(z)``)
#: changes the viewed tensor there, and not in a graph.
VIEW_OPS = frozenset({"slice", "narrow", "transpose", "reshape", "expand", "expand_dims", "squeeze", "unsqueeze", "flatten", "as_strided", "diagonal", "select", "view", "permute"})


def _assigned(input_map, rename, onnx_name: dict[str, str], kept: set[str]) -> bool:
    """An ``assign(ref, value)`` (``y.copy_(v)`` in a graph) as what it means to the ops after it:
    they read ``value`` where they read ``ref``, so ``ref`` is renamed to it from here on and the op
    goes (a write into an input too: the outputs are the same, only the caller's tensor is not
    changed). Not where ``ref`` is a weight or a view (``kept``): a model that writes its own state or
    through a view does what no ONNX graph does, and its assign stays, for the ``assign`` lowering to
    refuse with the reason."""
    ref, value = input_map["ref"].s[0], input_map["value"].s[0]
    if rename(ref, ref) in kept:
        return False
    onnx_name[ref] = rename(value, value)
    return True


def _outputs(output_ops, onnx_name: dict[str, str], tensors: dict, blob_descs) -> tuple[list[TensorInfo], list[str]]:
    """The graph's outputs under their ONNX names, and the tensor that feeds each.

    Graph outputs keep the producer's tensor name here; the converter binds them to readable
    output names (adding an Identity where one tensor feeds two outputs or an output is an input).
    """
    outputs, sources = [], []
    for index, op in enumerate(output_ops):
        lbn = getattr(op.output_conf, "in")  # "in" is a Python keyword
        source = onnx_name.get(lbn, lbn)
        info = tensors.get(source) or _tensor_info(source, blob_descs[lbn], lbn)
        outputs.append(TensorInfo(_numbered("output", len(output_ops), index), info.shape, info.dtype))
        sources.append(source)
    return outputs, sources


def _weight_reader(graph) -> Callable[[str], np.ndarray]:
    """The graph's weights, read from its state in memory when they are written (small ones in batches)."""
    return StateWeights(dict(_flatten_state(graph.state_dict())))


def _tensor_info(name: str, blob_desc, lbn: str) -> TensorInfo:
    dtype = _numpy_dtype(blob_desc.data_type)
    if dtype is None:
        from oneflow.core.common import data_type_pb2

        raise InvalidModelError(
            f"tensor {lbn!r} has data type {data_type_pb2.DataType.Name(blob_desc.data_type)}, which ONNX cannot carry"
        )
    return TensorInfo._made(name, tuple(blob_desc.shape.dim), dtype)
