# Usage: /usr/bin/python3 nbd_multiconn.py URI [ROUNDS]
# CAN_MULTI_CONN promise: a write flushed (or FUA) on one connection is seen by another at once.
import os
import sys

import nbd

uri = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
a = nbd.NBD()
b = nbd.NBD()
a.connect_uri(uri)
b.connect_uri(uri)
assert a.can_multi_conn() and b.can_multi_conn()
for i in range(rounds):
    off = (i % 64) * 4096 + (i % 7) * 100
    data = os.urandom(512 + (i % 5) * 1000)
    a.pwrite(data, off)
    a.flush()
    assert b.pread(len(data), off) == data, "B did not see A's flushed write in round %d" % i
    data2 = os.urandom(4096)
    b.pwrite(data2, off, nbd.CMD_FLAG_FUA)
    assert a.pread(4096, off) == data2, "A did not see B's FUA write in round %d" % i
a.shutdown()
b.shutdown()
print("multiconn ok", rounds)
