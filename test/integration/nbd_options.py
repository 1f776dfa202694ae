# Usage: /usr/bin/python3 nbd_options.py URI
# Option haggling through libnbd's option mode: LIST, INFO, LIST_META_CONTEXT, a GO for an unknown
# export (must fail, session goes on), then a GO for the default export that must succeed.
import sys

import nbd

uri = sys.argv[1]
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
names = []
h.opt_list(lambda name, desc: names.append(name) or 0)
assert names == [""], names
h.opt_info()
contexts = []
h.opt_list_meta_context(lambda ctx: contexts.append(ctx) or 0)
assert "base:allocation" in contexts, contexts
h.set_export_name("nope")
try:
    h.opt_go()
    raise SystemExit("GO for an unknown export succeeded")
except nbd.Error as e:
    print("unknown export:", e.errnum)
h.set_export_name("")
h.opt_go()
assert h.get_size() > 0
assert h.pread(512, 0) is not None
h.shutdown()

a = nbd.NBD()
a.set_opt_mode(True)
a.connect_uri(uri)
a.opt_abort()
print("options ok")
