"""The post-pass stage: the registered passes (onnxsim, onnxoptimizer, a plugin's own) run in
order, each checked, and settled against verification when the file fails it (:mod:`.post_passes`)."""

from .post_passes import PassesRun, PostPassed, Settled, apply_post_passes, settle_post_passes

__all__ = ["PassesRun", "PostPassed", "Settled", "apply_post_passes", "settle_post_passes"]
