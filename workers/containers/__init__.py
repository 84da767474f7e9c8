"""Containers whose root and data are datasets: the runtime contract and its adapters."""
