"""Patch stage: series discovery, git am, checkpatch."""
