"""Running exported models on ONNX Runtime: execution provider choice, checked inputs, named outputs.

::

    from flow2onnx.runtime import Model

    model = Model("digits.onnx")          # TensorRT, then CUDA, then CPU: the first that works here
    outputs = model.run(images)           # or model.run(input=images), or model.run({"input": images})
    logits = outputs["output"]

Without ``providers``, the model runs on the best of TensorRT, CUDA and CPU that ONNX Runtime
reports available *and* that opens the model: ``onnxruntime-gpu`` lists TensorRT and CUDA even on a
machine that lacks their libraries or a GPU, and then quietly leaves them out of the session, so
the providers the session really got are checked and every fallback is logged. An explicit list
(``["cuda", "cpu"]``, full names, or ``(name, options)`` pairs) replaces the automatic choice.

Inputs are checked against the model before ONNX Runtime sees them, so a wrong name, shape or dtype
is one message naming what the model expects. :func:`describe` reads a model file without running
it: inputs, outputs, opsets, op histogram, parameters.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Tuple, Union

import numpy as np
import onnx

from ..errors import InferenceError, ModelFileError, ModelInputError, ProviderError

log = logging.getLogger("flow2onnx")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: The automatic choice, best first; CPU is always the last resort.
PREFERRED_PROVIDERS = (TENSORRT, CUDA, CPU)
_SUFFIX = "ExecutionProvider"
# Short names people use that are not the provider's own name minus its suffix.
_ALIASES = {"trt": TENSORRT, "gpu": CUDA}
_GPU_ADVICE = "for CUDA or TensorRT install onnxruntime-gpu (flow2onnx's gpu extra; see docs/installation.md, 'GPU runtime')"

#: A provider as given by the caller: a name, or ``(name, provider options)``.
ProviderSpec = Union[str, Tuple[str, dict]]


# ---------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: name, shape (ints, symbolic names, ``None`` when unknown), dtype."""

    name: str
    shape: tuple
    #: numpy dtype of the elements; ``None`` for non-tensor values (sequences, maps).
    dtype: np.dtype | None
    #: ONNX Runtime's type string, e.g. ``tensor(float)``.
    type: str = ""

    @property
    def shape_text(self) -> str:
        """The shape as ``[batch, 3, 224, 224]``, with ``?`` for dimensions nobody named."""
        return "[" + ", ".join("?" if dim is None else str(dim) for dim in self.shape) + "]"

    @property
    def dtype_text(self) -> str:
        """The dtype's name (``float32``), or ONNX Runtime's type string for non-tensors."""
        return self.dtype.name if self.dtype is not None else self.type or "?"

    def describe(self) -> str:
        """``[batch, 3, 224, 224] (float32)``: what this tensor must look like."""
        return f"{self.shape_text} ({self.dtype_text})"


def _dtype_of_ort_type(type_string: str) -> np.dtype | None:
    # ONNX Runtime spells element types like TensorProto's enum, in lower case: tensor(float), tensor(int64).
    if not type_string.startswith("tensor(") or not type_string.endswith(")"):
        return None
    element = getattr(onnx.TensorProto, type_string[len("tensor(") : -1].upper(), None)
    if element is None:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(element))
    except (KeyError, TypeError, ValueError):
        return None


def _spec_of_node_arg(arg) -> TensorSpec:
    return TensorSpec(arg.name, tuple(arg.shape) if arg.shape is not None else (), _dtype_of_ort_type(arg.type), arg.type)


def _spec_of_value_info(info: onnx.ValueInfoProto) -> TensorSpec:
    kind = info.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorSpec(info.name, (), None, kind or "?")
    tensor = info.type.tensor_type
    dims = []
    for dim in tensor.shape.dim if tensor.HasField("shape") else []:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = None
    name = onnx.TensorProto.DataType.Name(tensor.elem_type).lower() if tensor.elem_type else "?"
    return TensorSpec(info.name, tuple(dims), dtype, f"tensor({name})")


# ---------------------------------------------------------------- the model file


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise ModelFileError(f"model file {path} does not exist; check the path, or export the model first (flow2onnx export)")
    if os.path.isdir(path):
        raise ModelFileError(f"{path} is a directory; pass the .onnx file inside it")
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"model file {path} is empty (0 bytes): it was not written completely; export or copy it again")


def _starts_like_onnx(path: str) -> bool:
    """Whether the file begins like a serialised ModelProto (``ir_version`` first, then another field).

    Protobuf gives the same "Error parsing message" for a cut-off model and for a JPEG, so the
    first bytes decide which of the two it is: every ONNX writer puts ``ir_version`` (field 1, a
    small varint) first.
    """
    with open(path, "rb") as file:
        head = file.read(3)
    if len(head) < 2 or head[0] != 0x08 or not 1 <= head[1] <= 63:
        return False
    if len(head) == 2:
        return True
    field_number, wire_type = head[2] >> 3, head[2] & 7
    return 2 <= field_number <= 20 and wire_type in (0, 2)


def _unreadable(path: str, error: Exception | None) -> ModelFileError:
    detail = f" ({error})" if error is not None and str(error) else ""
    if _starts_like_onnx(path):
        return ModelFileError(
            f"model file {path} is truncated or damaged: it starts like an ONNX model but cannot be read to the end"
            f"{detail}; export or copy it again"
        )
    return ModelFileError(
        f"{path} is not an ONNX model: it cannot be read as onnx.ModelProto{detail}; pass the .onnx file that "
        "flow2onnx export wrote"
    )


def load_model_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read a model file's structure (weights in external data files are not loaded).

    :raises ModelFileError: the file is missing, empty, truncated or not ONNX.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # protobuf's own complaint about foreign bytes
            model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends, whatever the implementation
        raise _unreadable(path, error) from error
    # Protobuf happily parses a prefix that ends between two fields: what is missing tells.
    if model.ir_version == 0 or not model.HasField("graph") or not model.opset_import:
        raise _unreadable(path, None)
    return model


def _tensors_of(graph: onnx.GraphProto):
    """Every tensor a graph holds: initializers, and tensor attributes of its nodes and subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors_of(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors_of(subgraph)


def check_external_data(path: str | os.PathLike, model: onnx.ModelProto | None = None) -> list[str]:
    """Check that every external-data location of a model stays inside the model's folder.

    A model file names the files its weights live in; a hostile one can name ``../../etc/passwd``,
    an absolute path, or a link that points out of the folder, and ONNX Runtime would read it. Each
    location must be a relative path that, once symbolic links are resolved, lies inside the folder
    of the model file and names an existing regular file. Returns the locations, in first-use order.

    :raises ModelFileError: naming the tensor and the location, for the first location that fails.
    """
    path = os.fspath(path)
    model = load_model_proto(path) if model is None else model
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    checked: dict[str, None] = {}
    for tensor in _tensors_of(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        if location not in checked:
            _check_location(path, folder, tensor.name, location)
            checked[location] = None
    return list(checked)


def _check_location(path: str, folder: str, tensor: str, location: str) -> None:
    def refuse(why: str) -> ModelFileError:
        return ModelFileError(
            f"model file {path} is refused: tensor {tensor!r} keeps its data at {location!r}, {why}; "
            "only data files inside the model's own folder are read. Re-export the model, or move its data file beside it "
            "and fix the location"
        )

    if not location:
        raise refuse("an empty location")
    if os.path.isabs(location) or os.path.splitdrive(location)[0]:
        raise refuse("an absolute path")
    resolved = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([folder, resolved]) != folder:
        raise refuse(f"which resolves to {resolved}, outside the model's folder {folder}")
    if not os.path.isfile(resolved):
        raise ModelFileError(
            f"model file {path} keeps the data of tensor {tensor!r} in {location!r}, which is missing beside it "
            f"(looked for {resolved}); copy the data file next to the model"
        )


def check_model_file(path: str | os.PathLike) -> None:
    """Run ``onnx.checker`` on a model file (external data included by reference).

    :raises ModelFileError: the file is missing, unreadable, or not a valid ONNX model.
    """
    path = os.fspath(path)
    check_external_data(path, load_model_proto(path))
    try:
        onnx.checker.check_model(path)
    except onnx.checker.ValidationError as error:
        raise ModelFileError(
            f"{path} is not a valid ONNX model: {_first_line(error)}; export it again, or fix the tool that wrote it"
        ) from error


# ---------------------------------------------------------------- providers


def available_providers() -> list[str]:
    """The execution providers this ONNX Runtime build reports (not all of them may work here)."""
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def provider_name(name: str) -> str:
    """The full ONNX Runtime name of a provider written as ``cuda``, ``TensorRT``, ``trt`` or in full.

    :raises ProviderError: ONNX Runtime knows no provider of that name.
    """
    import onnxruntime

    known = onnxruntime.get_all_providers()
    key = name.strip()
    key = _ALIASES.get(key.lower(), key)
    for full in known:
        if key.lower() in (full.lower(), full[: -len(_SUFFIX)].lower()):
            return full
    short = ", ".join(full[: -len(_SUFFIX)].lower() for full in known if full.endswith(_SUFFIX))
    raise ProviderError(f"unknown execution provider {name!r}; onnxruntime knows: {short}")


def _normalise(spec: ProviderSpec) -> tuple[str, dict]:
    if isinstance(spec, str):
        return provider_name(spec), {}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        return provider_name(spec[0]), dict(spec[1])
    raise ProviderError(f"a provider is a name or (name, options), got {spec!r}")


def _short(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


# ---------------------------------------------------------------- the model


#: The metadata key under which an export records where its inputs went in the module's arguments,
#: when the example nested them: ``{"specs": [...], "names": [...]}`` (see :meth:`Model.feeds`).
INPUT_TREE_KEY = "flow2onnx.input_tree"


class Model:
    """An ONNX model opened in ONNX Runtime, with checked inputs and outputs returned by name.

    :param path: the ``.onnx`` file (its external data, if any, beside it).
    :param providers: execution providers in order of preference, as names (``"cuda"``,
        ``"CPUExecutionProvider"``) or ``(name, options)`` pairs; ``None`` chooses TensorRT, then
        CUDA, then CPU among those available and working.
    :param session_options: an ``onnxruntime.SessionOptions``; by default ONNX Runtime logs errors only.
    :param available: the providers to treat as available, instead of what
        ``onnxruntime.get_available_providers()`` reports (to narrow the automatic choice).
    :param tf32: let the CUDA provider round float32 products to TF32 (10 mantissa bits) on GPUs that
        have it. Off by default, unlike ONNX Runtime's own default: measured on an H200, TF32 made
        ResNet-50's outputs differ from OneFlow's by up to 2.0e-2, 8% to 12% of them outside the
        tolerance the export was verified with, for up to 1.9x speed (ResNet-50 at batch 32; none
        for ViT-tiny at batch 1). A ``use_tf32`` option given with the provider wins over this.
    :raises ModelFileError: the file is missing, truncated, not ONNX, or ONNX Runtime cannot load it.
    :raises ProviderError: no requested provider is known, available or working.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[ProviderSpec] | None = None,
        *,
        session_options=None,
        available: Sequence[str] | None = None,
        tf32: bool = False,
    ):
        self.path = os.path.abspath(os.fspath(path))
        # Before ONNX Runtime sees the file: it would read whatever its external-data locations name.
        check_external_data(self.path)
        self._available = list(available) if available is not None else available_providers()
        self._session_options = session_options
        self.tf32 = tf32
        #: What was asked of ONNX Runtime: (provider, options) in order, before any fallback.
        self.requested_providers: list[tuple[str, dict]] = []
        #: Why the session runs on what it runs on, in one sentence (also logged).
        self.provider_note = ""
        #: Provider name -> why it was not used, for every requested or preferred provider that failed.
        self.provider_failures: dict[str, str] = {}
        self.session = self._open(providers)
        self.inputs = [_spec_of_node_arg(arg) for arg in self.session.get_inputs()]
        self.outputs = [_spec_of_node_arg(arg) for arg in self.session.get_outputs()]
        self._inputs_by_name = {spec.name: spec for spec in self.inputs}
        recorded = self.session.get_modelmeta().custom_metadata_map.get(INPUT_TREE_KEY)
        #: Where the inputs go in the exported module's arguments (one spec per argument), when its
        #: example nested them in tuples, lists or dicts; ``None`` otherwise.
        self.input_tree = None if recorded is None else json.loads(recorded)["specs"]

    # ---- what it is

    @property
    def providers(self) -> list[str]:
        """The providers the session really runs on, best first."""
        return list(self.session.get_providers())

    @property
    def provider(self) -> str:
        """The provider that runs what it can of the model (the first of :attr:`providers`)."""
        return self.providers[0]

    @property
    def input_names(self) -> list[str]:
        """The inputs' names, in the model's order (the order positional arrays fill)."""
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """The outputs' names, in the model's order (the keys of :meth:`run`'s result)."""
        return [spec.name for spec in self.outputs]

    def __repr__(self) -> str:
        return f"Model({self.path!r}, providers={self.providers!r})"

    # ---- opening

    def _session(self, providers: list[tuple[str, dict]]):
        import onnxruntime

        options = self._session_options
        if options is None:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # errors only; a provider that fails to load says why at this level
        with warnings.catch_warnings():
            # ONNX Runtime warns about providers outside its available list; the fallback below reports it.
            warnings.simplefilter("ignore", UserWarning)
            return onnxruntime.InferenceSession(
                self.path,
                sess_options=options,
                providers=[name for name, _ in providers],
                provider_options=[opts for _, opts in providers],
                # No silent retry inside ONNX Runtime: each fallback is decided and logged here.
                enable_fallback=0,
            )

    def _model_fault(self, error: Exception) -> ModelFileError | None:
        """A ModelFileError when the file itself is at fault for ``error``, else None (blame the provider)."""
        try:
            check_model_file(self.path)
        except ModelFileError as fault:
            return fault  # clearer than onnxruntime's own words, which stay in the exception chain
        return None

    def _open(self, providers):
        explicit = providers is not None
        if explicit:
            candidates = self._candidates(providers)
        else:
            candidates = [(name, {}) for name in PREFERRED_PROVIDERS if name in self._available or name == CPU]
        attempt = [(name, self._precision(name, opts)) for name, opts in candidates]
        self.requested_providers = list(attempt)
        session, attempt = self._first_session(attempt)
        active = list(session.get_providers())
        for name, _ in attempt:
            if name not in active:
                self.provider_failures[name] = "is reported available but did not initialise"
                log.warning(
                    "%s is reported available but did not initialise (onnxruntime left it out of the session; its log "
                    "says why); falling back to %s",
                    name,
                    active[0],
                )
        if explicit and active[0] not in [name for name, _ in candidates]:
            raise ProviderError(
                f"no requested execution provider works here: {self._failures()}; add cpu to the providers to fall "
                "back, or leave them out to choose automatically"
            )
        self.provider_note = self._explain(explicit)
        log.info("%s: running on %s: %s", os.path.basename(self.path), active[0], self.provider_note)
        return session

    def _candidates(self, providers) -> list[tuple[str, dict]]:
        """The providers asked for that this onnxruntime has, in the order asked; the others noted."""
        requested = [_normalise(spec) for spec in providers]
        if not requested:
            raise ProviderError("the providers list is empty; name at least one (e.g. cpu), or pass None to choose automatically")
        candidates = [(name, opts) for name, opts in requested if name in self._available]
        missing = [name for name, _ in requested if name not in self._available]
        if not candidates:
            raise ProviderError(
                f"none of the requested execution providers ({_short(missing)}) is available in this onnxruntime "
                f"(available: {_short(self._available)}); {_GPU_ADVICE}, or leave the providers out to choose automatically"
            )
        for name in missing:
            self.provider_failures[name] = "is not available in this onnxruntime"
            log.warning("%s is not available in this onnxruntime (available: %s); skipping it", name, _short(self._available))
        return candidates

    def _first_session(self, attempt):
        """A session on the first provider of ``attempt`` that opens the model, falling back along
        it; the session and the providers left from the one that opened it."""
        while True:
            try:
                return self._session(attempt), attempt
            except Exception as error:  # onnxruntime's pybind errors share no useful base class
                fault = self._model_fault(error)
                if fault is not None:
                    raise fault from error
                failed = attempt[0][0]
                if len(attempt) == 1:
                    if failed == CPU:
                        raise ModelFileError(
                            f"onnxruntime cannot load {self.path}: {_first_line(error)}; if the model uses an opset or op "
                            "this onnxruntime does not know, upgrade onnxruntime or export with a lower opset"
                        ) from error
                    raise ProviderError(
                        f"{failed} could not open {self.path}: {_first_line(error)}; add cpu to the providers to fall back"
                    ) from error
                self.provider_failures[failed] = f"could not open the model ({_first_line(error)})"
                log.warning("%s could not open the model (%s); trying %s", failed, _first_line(error), attempt[1][0])
                attempt = attempt[1:]

    def _precision(self, name: str, options: dict) -> dict:
        """The provider's options with float32 kept full precision on CUDA, unless asked otherwise."""
        if name == CUDA and "use_tf32" not in options:
            return {**options, "use_tf32": "1" if self.tf32 else "0"}
        return options

    def _failures(self) -> str:
        return "; ".join(f"{name} {why}" for name, why in self.provider_failures.items())

    def _explain(self, explicit: bool) -> str:
        if explicit:
            return "as requested" + (f" ({self._failures()})" if self.provider_failures else "")
        accelerators = [name for name in PREFERRED_PROVIDERS[:-1] if name in self._available]
        if not accelerators:
            return (
                f"chosen automatically; there is no GPU execution provider in this onnxruntime (available: "
                f"{_short(self._available)}): {_GPU_ADVICE}"
            )
        if self.provider_failures:
            return f"chosen automatically, after falling back: {self._failures()}"
        return "chosen automatically: the first of TensorRT, CUDA, CPU that is available and opens the model"

    # ---- running

    def run(self, *inputs, **named) -> dict[str, np.ndarray]:
        """Run the model; inputs by position, by name, or as one ``{name: array}`` mapping. A model
        exported from a module whose example nested its tensors (``model(x, (h0, c0))``, a dict)
        also takes the arguments nested the same way: ``run(x, (h0, c0))``.

        :returns: ``{output name: numpy array}``, in the model's output order.
        :raises ModelInputError: an input is unknown, missing, or of the wrong shape or dtype.
        :raises InferenceError: ONNX Runtime failed on inputs that passed the checks.
        """
        feeds = self.feeds(*inputs, **named)
        try:
            values = self.session.run(self.output_names, feeds)
        except Exception as error:
            raise InferenceError(f"onnxruntime failed to run {os.path.basename(self.path)} on {self.provider}: {_first_line(error)}") from error
        return dict(zip(self.output_names, values))

    __call__ = run

    def feeds(self, *inputs, **named) -> dict[str, np.ndarray]:
        """Check inputs, given as :meth:`run` takes them, and return ONNX Runtime's ``{name: array}`` feed."""
        by_name = len(inputs) == 1 and isinstance(inputs[0], Mapping) and not named and set(inputs[0]) <= set(self._inputs_by_name)
        if self.input_tree is not None and not by_name and any(isinstance(value, (tuple, list, Mapping)) for value in inputs):
            inputs = tuple(self._flattened(inputs))  # the module's arguments, nested as the example was
        elif len(inputs) == 1 and isinstance(inputs[0], Mapping) and not named:
            named, inputs = dict(inputs[0]), ()
        if len(inputs) > len(self.inputs):
            raise ModelInputError(
                f"the model takes {len(self.inputs)} input{'s' if len(self.inputs) != 1 else ''} "
                f"({self.input_summary()}), got {len(inputs)} arrays"
            )
        given = {spec.name: value for spec, value in zip(self.inputs, inputs)}
        for name, value in named.items():
            if name not in self._inputs_by_name:
                raise ModelInputError(f"the model has no input {name!r}; its inputs are {self.input_summary()}")
            if name in given:
                raise ModelInputError(f"input {name!r} was given twice, by position and by name")
            given[name] = value
        missing = [spec for spec in self.inputs if spec.name not in given]
        if missing:
            raise ModelInputError(
                f"missing input{'s' if len(missing) > 1 else ''} {', '.join(repr(spec.name) for spec in missing)}; "
                f"the model's inputs are {self.input_summary()}"
            )
        symbols: dict[str, tuple[int, str]] = {}
        feeds = {}
        for spec in self.inputs:
            array = _as_array(spec, given[spec.name])
            _check_input(spec, array, symbols)
            feeds[spec.name] = np.ascontiguousarray(array)
        return feeds

    def _flattened(self, arguments) -> list:
        """The module's arguments, nested as the export's example was, as the model's flat inputs."""
        if len(arguments) != len(self.input_tree):
            raise ModelInputError(f"the model was exported from a module called with {len(self.input_tree)} arguments; got {len(arguments)}")
        flat: list = []
        for index, (spec, value) in enumerate(zip(self.input_tree, arguments)):
            _flatten_argument(spec, value, f"argument {index}", flat)
        return flat

    def input_summary(self) -> str:
        """The inputs as ``'input' [batch, 3, 224, 224] (float32), ...``, for messages."""
        return ", ".join(f"{spec.name!r} {spec.describe()}" for spec in self.inputs) or "none"


def _flatten_argument(spec, value, where: str, flat: list) -> None:
    """Append ``value``'s arrays to ``flat`` in the order of ``spec`` (``"leaf"``, or a kind and its items)."""
    if spec == "leaf":
        flat.append(value)
        return
    kind, items = spec
    if kind == "const":  # a Python value the export made its call with: fixed in the file
        if value != items and not (isinstance(value, tuple) and list(value) == items):
            raise ModelInputError(f"{where} was {items!r} when the model was exported, and is fixed in the file; got {value!r}")
        return
    if kind == "dict":
        if not isinstance(value, Mapping) or set(value) != {key for key, _ in items}:
            keys = ", ".join(repr(key) for key, _ in items)
            raise ModelInputError(f"{where} must be a dict with the keys {keys}, as the export's example was; got {_kind_of(value)}")
        for key, item in items:
            _flatten_argument(item, value[key], f"{where}[{key!r}]", flat)
        return
    if not isinstance(value, (tuple, list)) or len(value) != len(items):
        raise ModelInputError(f"{where} must be a {kind} of {len(items)}, as the export's example was; got {_kind_of(value)}")
    for index, (item, part) in enumerate(zip(items, value)):
        _flatten_argument(item, part, f"{where}[{index}]", flat)


def _kind_of(value) -> str:
    if isinstance(value, Mapping):
        return f"a dict with the keys {', '.join(map(repr, value))}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")  # the caller's message goes on after it


def _as_array(spec: TensorSpec, value) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ModelInputError(f"input {spec.name!r} expects {spec.describe()}; the value given is not an array: {error}") from error


def _check_input(spec: TensorSpec, array: np.ndarray, symbols: dict[str, tuple[int, str]]) -> None:
    if spec.dtype is None:  # sequences and maps: left to ONNX Runtime
        return
    problems = []
    if spec.shape and array.ndim != len(spec.shape):
        problem = f"{array.ndim} dimensions instead of {len(spec.shape)}"
        if array.ndim == len(spec.shape) - 1:
            problem += " (add the batch axis: array[None])"
        problems.append(problem)
    elif spec.shape:
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
            if isinstance(want, int) and want != got:
                problems.append(f"dimension {axis} is {got}, the model needs {want}")
            elif isinstance(want, str):
                seen = symbols.get(want)
                if seen is not None and seen[0] != got:
                    problems.append(f"dimension {axis} ({want}) is {got}, but input {seen[1]!r} has {want} = {seen[0]}")
                else:
                    symbols.setdefault(want, (got, spec.name))
    if not _dtype_matches(spec.dtype, array.dtype):
        problems.append(f"convert it with array.astype(np.{spec.dtype.name})")
    if problems:
        raise ModelInputError(
            f"input {spec.name!r} expects shape {spec.describe()}, got {list(array.shape)} ({array.dtype}): {'; '.join(problems)}"
        )


def _dtype_matches(want: np.dtype, got: np.dtype) -> bool:
    if want.kind == "O":  # ONNX strings arrive as numpy objects or unicode/bytes arrays
        return got.kind in "OUS"
    return want == got


# ---------------------------------------------------------------- describing a model file


@dataclass
class ModelInfo:
    """What a model file contains, read without running it."""

    path: str
    file_bytes: int
    ir_version: int
    producer: str
    #: domain ("ai.onnx" for the default one) -> opset version.
    opsets: dict[str, int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: op type ("Conv", or "domain.Op" outside the default domain) -> node count, subgraphs included.
    op_counts: dict[str, int]
    #: elements of the floating-point initializers (the weights), their size in bytes, and how many tensors.
    parameters: int
    parameter_bytes: int
    parameter_tensors: int
    #: dtype names of the weights, e.g. ["float32"].
    parameter_dtypes: list[str]
    #: initializers that are not floating point (shapes, indices): counted apart from the weights.
    constant_tensors: int
    #: the external data files the weights live in, relative to the model.
    external_data: list[str] = field(default_factory=list)
    #: ``None`` when onnx.checker accepts the model, else its message.
    checker_error: str | None = None

    def to_text(self) -> str:
        """The report ``flow2onnx info`` prints."""
        lines = [f"model: {self.path} ({_size(self.file_bytes)})"]
        lines.append(f"producer: {self.producer or 'unknown'}; IR version {self.ir_version}")
        lines.append("opsets: " + ", ".join(f"{domain} {version}" for domain, version in self.opsets.items()))
        for title, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            lines.append(f"{title}:")
            width = max((len(spec.name) for spec in specs), default=0)
            lines.extend(f"  {spec.name:<{width}}  {spec.shape_text}  {spec.dtype_text}" for spec in specs)
        weights = f"parameters: {self.parameters:,} in {self.parameter_tensors} tensors, {_size(self.parameter_bytes)}"
        if self.parameter_dtypes:
            weights += f" ({', '.join(self.parameter_dtypes)})"
        if self.constant_tensors:
            weights += f"; {self.constant_tensors} other constant tensors (shapes, indices)"
        if self.external_data:
            weights += f"; stored in {', '.join(self.external_data)}"
        lines.append(weights)
        lines.append(f"ops: {sum(self.op_counts.values())} nodes of {len(self.op_counts)} types")
        width = max((len(op) for op in self.op_counts), default=0)
        for op, count in sorted(self.op_counts.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  {op:<{width}}  {count}")
        lines.append("onnx.checker: " + ("ok" if self.checker_error is None else f"FAILED: {self.checker_error}"))
        return "\n".join(lines)


def describe(path: str | os.PathLike) -> ModelInfo:
    """Read a model file's inputs, outputs (symbolic dimensions kept), opsets, op histogram and parameters.

    Weights in external data files are not read: their count and size come from the tensors' shapes.

    :raises ModelFileError: the file is missing, empty, truncated or not ONNX.
    """
    path = os.fspath(path)  # shown as the user wrote it
    model = load_model_proto(path)
    check_external_data(path, model)
    graph = model.graph
    initializer_names = {tensor.name for tensor in graph.initializer}
    parameters = parameter_bytes = parameter_tensors = 0
    dtypes: list[str] = []
    external = []
    for tensor in graph.initializer:
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
        if dtype is not None and dtype.kind == "f":
            count = int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
            parameters += count
            parameter_bytes += count * dtype.itemsize
            parameter_tensors += 1
            if dtype.name not in dtypes:
                dtypes.append(dtype.name)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), None)
            if location and location not in external:
                external.append(location)
    try:
        onnx.checker.check_model(path)
        checker_error = None
    except onnx.checker.ValidationError as error:
        checker_error = str(error).strip().splitlines()[0]
    producer = " ".join(part for part in (model.producer_name, model.producer_version) if part)
    return ModelInfo(
        path=path,
        file_bytes=os.path.getsize(path),
        ir_version=model.ir_version,
        producer=producer,
        opsets={entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        # Old IR versions list initializers among the inputs; they are weights, not inputs.
        inputs=[_spec_of_value_info(info) for info in graph.input if info.name not in initializer_names],
        outputs=[_spec_of_value_info(info) for info in graph.output],
        op_counts=dict(_op_counts(graph)),
        parameters=parameters,
        parameter_bytes=parameter_bytes,
        parameter_tensors=parameter_tensors,
        parameter_dtypes=dtypes,
        constant_tensors=len(graph.initializer) - parameter_tensors,
        external_data=external,
        checker_error=checker_error,
    )


def _op_counts(graph: onnx.GraphProto) -> Counter:
    counts: Counter = Counter()
    for node in graph.node:
        counts[f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
        for attribute in node.attribute:  # If/Loop/Scan bodies
            if attribute.type == onnx.AttributeProto.GRAPH:
                counts.update(_op_counts(attribute.g))
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    counts.update(_op_counts(subgraph))
    return counts


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


__all__ = [
    "CPU",
    "CUDA",
    "PREFERRED_PROVIDERS",
    "TENSORRT",
    "Model",
    "ModelInfo",
    "TensorSpec",
    "available_providers",
    "check_external_data",
    "check_model_file",
    "describe",
    "load_model_proto",
    "provider_name",
]
