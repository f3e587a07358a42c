"""The diagnose stage: which op's lowering makes a file differ from OneFlow (:mod:`.bisect`)."""

from .bisect import Divergence, find_first_divergence
from .diagnosis import NOT_RUN, Diagnosis, diagnose

__all__ = ["NOT_RUN", "Diagnosis", "Divergence", "diagnose", "find_first_divergence"]
