"""Which architecture a kernel image is for, read from its own header, so a
host can refuse a kernel it cannot boot before it starts anything.  Pure.

* x86 bzImage (Documentation/x86/boot.rst): ``HdrS`` at 0x202; bit 0 of
  ``xloadflags`` (0x236, protocol 2.12+) is XLF_KERNEL_64, a 64-bit kernel.
* arm64 Image (Documentation/arm64/booting.rst): magic ``ARM\\x64`` at 0x38.
* A gzip-compressed Image (Debian's arm64 vmlinuz) is read through gzip.
"""

from __future__ import annotations

import struct
import zlib

HEAD = 64 * 1024  # what this module needs to read of an image


def image_arch(head: bytes) -> str | None:
    """``x86_64``, ``i386``, ``arm64``, or None when the header is none of them."""
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 4096)
        except zlib.error:
            return None
        return image_arch(inner)
    if len(head) >= 0x3C and head[0x38:0x3C] == b"ARM\x64":
        return "arm64"
    if len(head) >= 0x238 and head[0x202:0x206] == b"HdrS":
        (xloadflags,) = struct.unpack_from("<H", head, 0x236)
        return "x86_64" if xloadflags & 1 else "i386"
    return None
