"""l2l_opt: a learned LSTM optimizer (Andrychowicz et al. 2016) for JAX, as optax transforms."""

from l2l_opt import checkpoint, evaluate, lstm, preprocessing, pretrained, unroll
from l2l_opt.checkpoint import CheckpointError
from l2l_opt.config import ConfigError, LSTMOptConfig
from l2l_opt.meta_train import (
    MetaTrainConfig,
    MetaTrainMetrics,
    MetaTrainState,
    meta_train_init,
    meta_train_step,
)
from l2l_opt.transform import LearnedOptState, learned_opt, scale_by_lstm
from l2l_opt.unroll import UnrollState

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "LSTMOptConfig",
    "LearnedOptState",
    "MetaTrainConfig",
    "MetaTrainMetrics",
    "MetaTrainState",
    "UnrollState",
    "checkpoint",
    "evaluate",
    "learned_opt",
    "lstm",
    "meta_train_init",
    "meta_train_step",
    "preprocessing",
    "pretrained",
    "scale_by_lstm",
    "unroll",
]
