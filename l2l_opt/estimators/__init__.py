"""Meta-gradient estimators over truncated unrolls: one file each, named in a registry
(`base.register`); truncated backprop and PES are siblings over one `l2l_opt.unroll.Truncation`."""

from l2l_opt.estimators import base, pes, tbptt
from l2l_opt.estimators.base import (
    ESTIMATORS,
    EstimatorConfig,
    GradientEstimator,
    from_dict,
    get,
    register,
    to_dict,
)
from l2l_opt.estimators.pes import PES, PESConfig, PESState
from l2l_opt.estimators.tbptt import TBPTTConfig, TruncatedBackprop

__all__ = [
    "ESTIMATORS",
    "PES",
    "EstimatorConfig",
    "GradientEstimator",
    "PESConfig",
    "PESState",
    "TBPTTConfig",
    "TruncatedBackprop",
    "base",
    "from_dict",
    "get",
    "pes",
    "register",
    "tbptt",
    "to_dict",
]
