"""Configure and build stages: verified Kconfig, cached builds, diagnostics, kselftest."""
