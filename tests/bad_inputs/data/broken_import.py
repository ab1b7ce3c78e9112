"""Imports fine until line 4."""


import astuner_no_such_module  # noqa: F401
