"""Measuring a model: does it stop (conformance), does it answer (the instruction check), shared generation, reports."""
