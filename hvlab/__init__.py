"""hvlab: build and test Linux Hyper-V drivers, report in JUnit."""

__version__ = "0.1.0"
