# Usage: /usr/bin/python3 nbd_probe.py URI
# Drives the gateway with libnbd: capabilities, round trips, unaligned and concurrent sub-sector
# writes, and bad requests that must fail with the right errno while the connection stays usable.
# Prints one JSON object; any assertion failure exits non-zero.
import errno
import json
import sys

import nbd

uri = sys.argv[1]
out = {}
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
size = h.get_size()
out["protocol"] = h.get_protocol()
out["structured"] = h.get_structured_replies_negotiated()
out["size"] = size
for k in ("can_flush", "can_fua", "can_multi_conn", "can_trim", "can_zero", "can_fast_zero", "can_df", "can_cache"):
    out[k] = bool(getattr(h, k)())
out["block_sizes"] = [h.get_block_size(c) for c in (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED, nbd.SIZE_MAXIMUM)]

# Aligned round trip with FUA.
buf = bytes(range(256)) * 16
h.pwrite(buf, 4096, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 4096) == buf, "aligned round trip"

# Unaligned write crossing the sector boundary at 8192 keeps the neighbouring bytes.
h.pwrite(b"\xaa" * 16384, 0)
h.pwrite(b"\x11" * 1000, 8000)
got = h.pread(16384, 0)
expect = bytearray(b"\xaa" * 16384)
expect[8000:9000] = b"\x11" * 1000
assert got == bytes(expect), "unaligned write across a sector boundary"

# Many concurrent sub-sector writes into one sector: none may lose another's bytes.
base = 5 * 4096
h.pwrite(bytes(4096), base)
cookies = []
for i in range(64):
    cookies.append(h.aio_pwrite(bytes([i + 1]) * 64, base + i * 64))
for c in cookies:
    while not h.aio_command_completed(c):
        h.poll(-1)
got = h.pread(4096, base)
assert got == b"".join(bytes([i + 1]) * 64 for i in range(64)), "concurrent sub-sector writes lost bytes"

# Zeroing, flush, trim, block status.
h.zero(1 << 20, 0, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(16384, 0) == bytes(16384), "zero"
h.pwrite(b"\x22" * 3000, 100)
h.zero(1000, 1000)
z = h.pread(3100, 0)
assert z == bytes(100) + b"\x22" * 900 + bytes(1000) + b"\x22" * 1100, "unaligned zero"
h.flush()
h.trim(1 << 20, 0)
extents = []
h.block_status(1 << 20, 0, lambda meta, off, ents, err: extents.append((meta, off, list(ents))) or 0)
out["block_status"] = extents

# 32 MiB read and write in one request each.
big = (bytes(range(251)) * ((32 << 20) // 251 + 1))[: 32 << 20]
h.pwrite(big, 0)
assert h.pread(32 << 20, 0) == big, "32 MiB round trip"

# Bad requests: the right errno, and the connection keeps working after each.
h.set_strict_mode(0)
errors = {}
for name, f in (
    ("read_past_end", lambda: h.pread(4096, size)),
    ("write_past_end", lambda: h.pwrite(b"x" * 512, size)),
    ("zero_past_end", lambda: h.zero(4096, size)),
    ("trim_past_end", lambda: h.trim(4096, size)),
    ("read_zero_bytes", lambda: h.pread(0, 0)),
    ("read_straddling_end", lambda: h.pread(8192, size - 4096)),
    ("read_too_big", lambda: h.pread((32 << 20) + 4096, 0)),
):
    try:
        f()
        errors[name] = "ok"
    except nbd.Error as e:
        errors[name] = errno.errorcode.get(e.errnum, str(e.errnum))
    assert h.pread(4096, 4096) == big[4096:8192], "connection unusable after " + name
out["errors"] = errors
assert h.pread(1, 3) == big[3:4]
h.shutdown()
print(json.dumps(out))
