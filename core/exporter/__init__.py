"""The exporter: :func:`~flow2onnx.exporter.api.export` and the stages it runs, one subpackage each,
in the order the data flows (see :mod:`.pipeline`):

- :mod:`.capture`: the model's ops and tensors, from a compiled ``nn.Graph`` or an eager run;
- :mod:`.plan`: the dynamic axes, the verification runs and the sizes of the second compilation;
- :mod:`.lower`: the plugins chosen and every op lowered to ONNX nodes;
- :mod:`.passes`: the post-passes (onnxsim, onnxoptimizer, a plugin's own);
- :mod:`.write`: the file staged beside the target and published once verified;
- :mod:`.verify`: the file and OneFlow on the same inputs, every output compared;
- :mod:`.diagnose`: the first op whose lowering diverges.

Shared by the stages, and by none of them owned: :mod:`.options` (the checked options),
:mod:`.weights` (the parameters, read from OneFlow's memory) and :mod:`.serialize` (a model
whose weights are streamed when it is written). Above the pipeline: :mod:`.api`,
:mod:`.isolation` (an export in a worker process) and :mod:`.compat` (the tutorial's API).
"""
