"""Hydra finds the framework's sweepers here (``hydra_plugins`` is a namespace package Hydra scans)."""
