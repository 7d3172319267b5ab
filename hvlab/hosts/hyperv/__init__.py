"""The hyperv host kind: Hyper-V hosts driven by PowerShell over SSH."""
