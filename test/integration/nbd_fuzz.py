# Usage: /usr/bin/python3 nbd_fuzz.py HOST PORT SEED COUNT [structured] [pipelined]
# Raw-socket NBD client (no libnbd: it refuses to send most of these) that mixes random requests
# (any command type, flags, offset and length, including past the end, 2^64-1, zero and over the
# 32 MiB maximum) with whole-sector writes and reads of the first 64 sectors. Every request must get
# exactly one reply (simple; or with "structured", for READ a chain of chunks ending in one marked
# done, for the others either form, as the NBD spec allows) carrying its own handle and an errno of
# 0, EINVAL or ENOSPC, on the same connection, and every successful read must return what the
# successful writes, zeroings and reads before it imply (Model below), at any offset and length.
# With "pipelined", requests go in windows of 16 before any reply is read: the replies may come in
# any order (and structured chunks of different requests interleaved); the requests of one window
# touch disjoint byte ranges, so the model does not depend on the order they ran in. With
# "structured", base:allocation is negotiated too, and every BLOCK_STATUS reply must be one chunk of
# extents that start at the request's offset and cover no more than it asked (exactly one extent
# with REQ_ONE), and every extent it flags zero must read as zeros by the model. Writes above
# 40 MiB (which close the connection by design) and DISC are left out. Prints one JSON line; any
# failure exits non-zero.
import json
import random
import socket
import struct
import sys

host, port, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
modes = set(sys.argv[5:])
assert modes <= {"structured", "pipelined"}, f"unknown modes {modes}"
structured = "structured" in modes
window = 16 if "pipelined" in modes else 1
rng = random.Random(seed)

IHAVEOPT = 0x49484156454F5054
NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_INFO, NBD_INFO_EXPORT = 7, 8, 1, 3, 0
NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, CHUNK_BLOCK_STATUS = 10, 4, 5
STATE_ZERO, FLAG_REQ_ONE = 2, 8
REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC = 0x25609513, 0x67446698, 0x668E33EF
CHUNK_DONE, CHUNK_NONE, CHUNK_OFFSET_DATA, CHUNK_OFFSET_HOLE, CHUNK_ERROR_BIT = 1, 0, 1, 2, 0x8000
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS = range(8)
ALLOWED_ERRNOS = {0, 22, 28}  # EINVAL, ENOSPC
SECTOR = 4096
CHECKED_SECTORS = 64


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def option_replies(sock):
    """The replies to one option, up to its ACK: the export size if an INFO_EXPORT came, or the
    context id if a META_CONTEXT did."""
    value = None
    while True:
        _magic, _opt, rep, length = struct.unpack(">QIII", recv_exact(sock, 20))
        data = recv_exact(sock, length)
        assert rep & 0x80000000 == 0, f"option error {rep:#x}"
        if rep == NBD_REP_INFO and struct.unpack(">H", data[:2])[0] == NBD_INFO_EXPORT:
            value = struct.unpack(">Q", data[2:10])[0]
        if rep == NBD_REP_META_CONTEXT:
            assert data[4:] == b"base:allocation", data
            value = struct.unpack(">I", data[:4])[0]
        if rep == NBD_REP_ACK:
            return value


def connect():
    sock = socket.create_connection((host, port), timeout=60)
    greeting = recv_exact(sock, 18)
    assert greeting[:8] == b"NBDMAGIC", greeting
    sock.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    context = None
    if structured:
        sock.sendall(struct.pack(">QII", IHAVEOPT, NBD_OPT_STRUCTURED_REPLY, 0))
        option_replies(sock)
        query = b"base:allocation"
        data = struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", len(query)) + query
        sock.sendall(struct.pack(">QII", IHAVEOPT, NBD_OPT_SET_META_CONTEXT, len(data)) + data)
        context = option_replies(sock)
        assert context is not None, "base:allocation was not selected"
    # NBD_OPT_GO, default export, no info requests.
    sock.sendall(struct.pack(">QII", IHAVEOPT, NBD_OPT_GO, 6) + struct.pack(">IH", 0, 0))
    return sock, option_replies(sock), context


chunks_seen = 0
out_of_order = 0  # replies that completed in another place than their request was sent in


def read_replies(sock, pending):
    """Reads replies until every request in `pending` (handle -> request) has its whole reply, in
    whatever order they come; returns handle -> (errno, data read)."""
    global chunks_seen, out_of_order
    done = {}
    order = list(pending)
    while pending:
        magic = struct.unpack(">I", recv_exact(sock, 4))[0]
        if magic == SIMPLE_REPLY_MAGIC:
            err, handle = struct.unpack(">IQ", recv_exact(sock, 12))
            assert handle in pending, f"simple reply for unknown handle {handle:#x}"
            req = pending.pop(handle)
            where = req["where"]
            assert not (structured and req["kind"] == READ), f"{where}: a simple reply to a READ after structured replies"
            done[handle] = (err, recv_exact(sock, req["length"]) if req["kind"] == READ and err == 0 else b"")
            continue
        assert structured and magic == STRUCTURED_REPLY_MAGIC, f"reply magic {magic:#x}"
        chunks_seen += 1
        flags, chunk, handle, size = struct.unpack(">HHQI", recv_exact(sock, 16))
        assert handle in pending, f"chunk for unknown handle {handle:#x}"
        req = pending[handle]
        where, length = req["where"], req["length"]
        payload = recv_exact(sock, size)
        if chunk & CHUNK_ERROR_BIT:
            assert req["err"] == 0, f"{where}: two error chunks"
            req["err"] = struct.unpack(">I", payload[:4])[0]
        elif chunk in (CHUNK_OFFSET_DATA, CHUNK_OFFSET_HOLE):
            assert req["kind"] == READ, f"{where}: data chunk for type {req['kind']}"
            at = struct.unpack(">Q", payload[:8])[0] - req["offset"]
            piece = payload[8:] if chunk == CHUNK_OFFSET_DATA else bytes(struct.unpack(">I", payload[8:12])[0])
            assert 0 <= at and at + len(piece) <= length, f"{where}: chunk outside the request"
            # Allocated on the first data chunk: a failing READ may ask for up to 4 GiB.
            if req["data"] is None:
                req["data"] = bytearray(length)
            req["data"][at : at + len(piece)] = piece
            req["covered"] += len(piece)
        elif chunk == CHUNK_BLOCK_STATUS:
            assert req["kind"] == BLOCK_STATUS and req["extents"] is None, f"{where}: block status chunk"
            assert struct.unpack(">I", payload[:4])[0] == context, f"{where}: context id"
            words = struct.unpack(f">{(size - 4) // 4}I", payload[4:])
            extents = list(zip(words[0::2], words[1::2]))
            assert extents and all(ln > 0 for ln, _ in extents), f"{where}: extents {extents}"
            assert sum(ln for ln, _ in extents) <= length, f"{where}: extents past the request"
            assert not (req["flags"] & FLAG_REQ_ONE) or len(extents) == 1, f"{where}: REQ_ONE got {len(extents)}"
            req["extents"] = extents
        else:
            assert chunk == CHUNK_NONE, f"{where}: chunk type {chunk}"
        if flags & CHUNK_DONE:
            del pending[handle]
            err, data = req["err"], req["data"]
            assert err != 0 or req["kind"] != READ or req["covered"] == length, f"{where}: read covered {req['covered']} of {length}"
            assert err != 0 or req["kind"] != BLOCK_STATUS or req["extents"], f"{where}: block status without extents"
            done[handle] = (err, bytes(data) if err == 0 and data is not None else b"")
    out_of_order += sum(1 for sent_as, got in zip(order, done) if sent_as != got)
    return done


def random_request(size):
    kind = rng.choice([READ, WRITE, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS, 8, 9, 15, 255, 65535])
    flags = rng.choice([0, 0, 0, 1, 2, 4, 8, 16, 0xFFFF, rng.getrandbits(16)])
    # Half inside the volume at any byte (unaligned ranges that succeed; mostly in its first MiB, so
    # that later reads overlap them), half at its edges and beyond.
    if rng.random() < 0.5:
        offset = rng.randrange(1 << 20) if rng.random() < 0.75 else rng.randrange(size)
        length = min(rng.randrange(1, 64 << 10), size - offset)
    else:
        offset = rng.choice([0, size - 1, size, size + SECTOR, 2**63, 2**64 - 1, rng.getrandbits(64)])
        length = rng.choice([0, 1, 511, SECTOR, 32 << 20, (32 << 20) + 1, 2**32 - 1, rng.getrandbits(32)])
    payload = b""
    if kind == WRITE:
        if length > 40 << 20:
            length = rng.randrange(1 << 20)
        payload = rng.randbytes(64) * (length // 64 + 1)
        payload = payload[:length]
    return kind, flags, offset, length, payload


class Model:
    """What the volume must hold: every byte a successful write or zeroing set, or a read showed
    (the volume's earlier content is unknown until then). TRIM makes its range unknown again."""

    def __init__(self, size):
        self.data = bytearray(size)
        self.known = bytearray(size)  # 0xFF where data[i] is known

    def learn(self, offset, data):
        self.data[offset : offset + len(data)] = data
        self.known[offset : offset + len(data)] = b"\xff" * len(data)

    def forget(self, offset, length):
        self.known[offset : offset + length] = bytes(length)

    def mismatch(self, offset, data):
        """The first byte of `data` (read at `offset`) that differs from a known byte, or None."""
        end = offset + len(data)
        # Whole-range big-integer arithmetic: fast in CPython, where a byte loop is not.
        got, want = int.from_bytes(data, "big"), int.from_bytes(self.data[offset:end], "big")
        diff = (got ^ want) & int.from_bytes(self.known[offset:end], "big")
        if diff == 0:
            return None
        return offset + len(data) - 1 - (diff.bit_length() - 1) // 8


def next_request(size):
    # Most requests are whole-sector writes and reads of a few sectors, so reads often follow writes.
    if rng.random() < 0.6:
        offset, length = rng.randrange(CHECKED_SECTORS) * SECTOR, SECTOR
        if rng.random() < 0.5:
            return WRITE, rng.choice([0, 1]), offset, length, rng.randbytes(1) * SECTOR
        return READ, 0, offset, length, b""
    return random_request(size)


def span(offset, length, size):
    """The bytes of the volume a request touches, as (start, end); empty if it is outside."""
    return (offset, min(offset + length, size)) if offset < size else (0, 0)


sock, size, context = connect()
model = Model(size)
replies = {}
checked_reads = 0
checked_maps = 0
zero_extents = 0
sent = 0
while sent < count:
    batch = {}
    spans = []
    while len(batch) < window and sent < count:
        for _attempt in range(20):
            kind, flags, offset, length, payload = next_request(size)
            start, end = span(offset, length, size)
            if start == end or all(end <= a or b <= start for a, b in spans):
                break
        else:
            break  # no disjoint request found: this window is full enough
        spans.append((start, end))
        handle = rng.getrandbits(64)
        while handle in batch:
            handle = rng.getrandbits(64)
        where = f"request {sent}: type {kind} flags {flags:#x} offset {offset} length {length}"
        batch[handle] = {"kind": kind, "flags": flags, "offset": offset, "length": length, "payload": payload,
                         "where": where, "data": None, "covered": 0, "err": 0, "extents": None}
        sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, kind, handle, offset, length) + payload)
        sent += 1
    results = read_replies(sock, dict(batch))
    # The requests of a window touch disjoint bytes: reads are checked against the model as it was
    # before the window, then every effect is applied.
    for handle, req in batch.items():
        err, data = results[handle]
        kind, offset, length, where = req["kind"], req["offset"], req["length"], req["where"]
        assert err in ALLOWED_ERRNOS, f"{where}: errno {err}"
        replies[f"{kind}/{err}"] = replies.get(f"{kind}/{err}", 0) + 1
        if err == 0 and kind == READ:
            bad = model.mismatch(offset, data)
            assert bad is None, f"{where}: byte {bad} reads {data[bad - offset]:#x}, not {model.data[bad]:#x}"
            checked_reads += 1
        if err == 0 and kind == BLOCK_STATUS:
            at = offset
            for ln, state in req["extents"]:
                if state & STATE_ZERO:
                    bad = model.mismatch(at, bytes(ln))
                    assert bad is None, f"{where}: byte {bad} reported zero, known as {model.data[bad]:#x}"
                    zero_extents += 1
                at += ln
            checked_maps += 1
    for handle, req in batch.items():
        err, data = results[handle]
        kind, offset, length = req["kind"], req["offset"], req["length"]
        if err != 0:
            continue
        if kind == READ:
            model.learn(offset, data)
        elif kind == WRITE:
            model.learn(offset, req["payload"])
        elif kind == WRITE_ZEROES:
            model.learn(offset, bytes(length))
        elif kind == TRIM:
            model.forget(offset, length)

sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, DISC, 0, 0, 0))
sock.close()
print(json.dumps({"requests": sent, "checked_reads": checked_reads, "checked_maps": checked_maps,
                  "zero_extents": zero_extents, "chunks": chunks_seen,
                  "out_of_order": out_of_order, "replies": replies}))
