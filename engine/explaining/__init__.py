"""Explaining: tracers that record each step, and the text rendering of a trace."""
