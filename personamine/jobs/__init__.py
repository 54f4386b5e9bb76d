"""Run configs and the entry points (Python API and CLI)."""
