"""Pure parsers for test output (no processes, no files)."""
