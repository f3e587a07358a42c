"""The plan stage: which axes stay dynamic, the verification runs (inputs and sizes), and the sizes
at which the model is compiled a second time (:mod:`.axes`); the draws of inputs (:mod:`.draws`)."""

from .axes import BATCH_DIM, ELEMENTWISE, POSITION_OPS, RANDOM_OPS, UNSPECIFIED_OPS, AxesPlan, VerificationRun, dynamic_axes_of, plan_axes, settle_sizes

__all__ = ["BATCH_DIM", "ELEMENTWISE", "POSITION_OPS", "RANDOM_OPS", "UNSPECIFIED_OPS", "AxesPlan", "VerificationRun", "dynamic_axes_of", "plan_axes", "settle_sizes"]
