# Usage: /usr/bin/python3 nbd_quorum_loss.py URI
# Driven step by step over stdin by nbd_failover.test.ts, on ONE connection:
#   1. write A, print "written"; wait for a line (the test killed two of three replicas)
#   2. a write and a read must fail with EIO (gateway --timeout-ms), print "failed <errno> <errno> <s>"
#   3. wait for a line (a replica is back): new writes and reads on the same connection succeed,
#      and A is still there; print "recovered"
import errno
import os
import sys
import time

import nbd

h = nbd.NBD()
h.connect_uri(sys.argv[1])
a = os.urandom(8192)
h.pwrite(a, 0)
print("written", flush=True)
sys.stdin.readline()

names = []
started = time.monotonic()
for f in (lambda: h.pwrite(os.urandom(4096), 40960), lambda: h.pread(4096, 81920)):
    try:
        f()
        names.append("ok")
    except nbd.Error as e:
        names.append(errno.errorcode.get(e.errnum, str(e.errnum)))
print("failed", names[0], names[1], round(time.monotonic() - started, 1), flush=True)
sys.stdin.readline()

c = os.urandom(4096 * 3 + 100)
h.pwrite(c, 122880)
assert h.pread(len(c), 122880) == c, "write after recovery"
assert h.pread(8192, 0) == a, "data written before the outage"
print("recovered", flush=True)
h.shutdown()
