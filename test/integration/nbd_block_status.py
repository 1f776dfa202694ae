# Usage: /usr/bin/python3 nbd_block_status.py URI write|map OFFSET LENGTH
#   write: writes 4 KiB of 0x5a at OFFSET on one connection (acknowledged when this returns).
#   map:   on a fresh connection, BLOCK_STATUS (base:allocation) of [OFFSET, OFFSET + LENGTH),
#          asked again from where each reply ended, and once with REQ_ONE at OFFSET.
# Prints one JSON object: {"extents": [[offset, length, flags], ...], "req_one": [[length, flags], ...]}.
import json
import sys

import nbd

uri, mode, offset, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
out = {}
if mode == "write":
    h.pwrite(b"\x5a" * 4096, offset)
    out["written"] = offset
else:
    extents = []
    pos, end = offset, offset + length
    while pos < end:
        got = []

        def cb(meta, off, ents, err):
            assert meta == "base:allocation", meta
            got.extend(zip(ents[0::2], ents[1::2]))
            return 0

        h.block_status(end - pos, pos, cb)
        assert got, "a reply has at least one extent"
        for ln, flags in got:
            if extents and extents[-1][2] == flags and extents[-1][0] + extents[-1][1] == pos:
                extents[-1][1] += ln
            else:
                extents.append([pos, ln, flags])
            pos += ln
    assert pos == end, ("the extents overshoot the request", pos, end)
    out["extents"] = extents
    one = []
    h.block_status(length, offset, lambda meta, off, ents, err: one.extend(zip(ents[0::2], ents[1::2])) or 0,
                   nbd.CMD_FLAG_REQ_ONE)
    out["req_one"] = [list(e) for e in one]
h.shutdown()
print(json.dumps(out))
