"""Controlled experiments on mathforge's own data: does training on it make a student better, and by how much?"""

from mathforge.experiment.config import ARMS, TRAIN_DEFAULTS, ExperimentConfig
from mathforge.experiment.run import arm_data, contrasts, run_experiment

__all__ = ["ARMS", "TRAIN_DEFAULTS", "ExperimentConfig", "arm_data", "contrasts", "run_experiment"]
