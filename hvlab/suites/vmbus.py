"""VMBus words the suites share (the judges are in hvchecks.py, the class table
comes from the tested tree, hvtree.py)."""

from __future__ import annotations

NOT_ON_HYPERV = "not on Hyper-V: no /sys/bus/vmbus (hv_vmbus refuses to load elsewhere)"
