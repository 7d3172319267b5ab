"""Test hosts: where built kernels boot (QEMU guests, SSH machines, Hyper-V VMs)."""
