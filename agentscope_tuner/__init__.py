"""The reference docs' import name: `from agentscope_tuner import Workflow, ...` is astuner."""

from astuner import *  # noqa: F401,F403
from astuner import ModelTuner, __all__  # noqa: F401
