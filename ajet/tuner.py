"""`from ajet.tuner import AjetTuner`: astuner's ModelTuner."""

from astuner.tuner import ModelTuner

AjetTuner = ModelTuner

__all__ = ["AjetTuner"]
