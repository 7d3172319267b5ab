"""Boot stage pieces shared by every host kind: guest image, console scan, verification."""
