"""l2l_opt: learned optimizers (Andrychowicz et al. 2016 and on) for JAX, as optax transforms."""

from l2l_opt import (
    architecture,
    checkpoint,
    common,
    compare,
    estimators,
    evaluate,
    gain,
    inner,
    lstm,
    lstm_config,
    lstm_network,
    lstm_xla,
    mlp,
    preprocessing,
    pretrained,
    problem,
    run,
    tensor_lstm,
    unroll,
)
from l2l_opt.checkpoint import CheckpointError
from l2l_opt.config import ConfigError
from l2l_opt.estimators import PES, TruncatedBackprop
from l2l_opt.gain import GainConfig, GainState, scale_by_gain
from l2l_opt.lstm import LearnedOptState, scale_by_lstm, scale_by_lstm_network
from l2l_opt.lstm_config import LSTMOptConfig
from l2l_opt.meta_train import (
    MetaTrainConfig,
    MetaTrainMetrics,
    MetaTrainState,
    meta_train_init,
    meta_train_step,
)
from l2l_opt.mlp import MLPOptConfig, MLPOptState, scale_by_mlp
from l2l_opt.problem import Problem, augment
from l2l_opt.tensor_lstm import TensorLSTMConfig, TensorLSTMState, scale_by_tensor_lstm
from l2l_opt.transform import learned_opt
from l2l_opt.unroll import UnrollState

__version__ = "0.1.0"

__all__ = [
    "PES",
    "CheckpointError",
    "ConfigError",
    "GainConfig",
    "GainState",
    "LSTMOptConfig",
    "LearnedOptState",
    "MLPOptConfig",
    "MLPOptState",
    "MetaTrainConfig",
    "MetaTrainMetrics",
    "MetaTrainState",
    "Problem",
    "TensorLSTMConfig",
    "TensorLSTMState",
    "TruncatedBackprop",
    "UnrollState",
    "architecture",
    "augment",
    "checkpoint",
    "common",
    "compare",
    "estimators",
    "evaluate",
    "gain",
    "inner",
    "learned_opt",
    "lstm",
    "lstm_config",
    "lstm_network",
    "lstm_xla",
    "meta_train_init",
    "meta_train_step",
    "mlp",
    "preprocessing",
    "pretrained",
    "problem",
    "run",
    "scale_by_gain",
    "scale_by_lstm",
    "scale_by_lstm_network",
    "scale_by_mlp",
    "scale_by_tensor_lstm",
    "tensor_lstm",
    "unroll",
]
