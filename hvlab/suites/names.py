"""Names the configuration may use for built-in tests (no I/O imports here)."""

BUILTIN_TESTS = ("kernel-release", "dmesg-errors", "taint", "hyperv-modules", "vmbus-devices",
                 "hv-utils", "hv-balloon", "hv-network", "hv-storage", "hv-sock",
                 "netvsc-reload", "module-reload", "cpu-hotplug", "netvsc-settings", "kunit")
