"""Training: recipe -> run directory with a trained model and its metrics."""

from dlcli.train.trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
