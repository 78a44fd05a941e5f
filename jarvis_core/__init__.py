"""Jarvis: bring local LLM engines up, test them fairly, and tear them down again.

Plugin authors import from `jarvis_core.api` (the whole plugin interface) and test with `jarvis_core.testing`;
docs/plugins.md describes the contract.
"""

__version__ = "0.2.1"
