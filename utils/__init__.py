"""Helpers shared by the entry points: evaluation, checkpoints, logging, plotting.

Nothing in ``utils`` parses options or reads ``sys.argv``.
"""
