"""Benchmarks for issue 8: Jarvis measures truthfully and adds almost nothing to what it measures.

Run them all with `python -m benchmarks.run` from the repository root; results and their meaning: RESULTS.md.
"""
