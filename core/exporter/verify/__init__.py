"""The verify stage: the written file and OneFlow run on the plan's inputs, every output compared
(:mod:`.verifier`; the rule and the report are :mod:`.comparison`'s, OneFlow's side :mod:`.reference`'s)."""

from .comparison import OutputComparison, VerificationReport, compare
from .verifier import Check, Verified, Verifier, conclude

__all__ = ["Check", "OutputComparison", "VerificationReport", "Verified", "Verifier", "compare", "conclude"]
