"""Driver test suites: built-in Hyper-V checks, suite runner, result parsing."""
