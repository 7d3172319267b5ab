"""Patch series: discovery and parsing (pure) and application (git)."""
