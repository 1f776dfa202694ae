# Usage: /usr/bin/python3 nbd_fuzz.py HOST PORT SEED COUNT [structured]
# Raw-socket NBD client (no libnbd: it refuses to send most of these) that mixes random requests
# (any command type, flags, offset and length, including past the end, 2^64-1, zero and over the
# 32 MiB maximum) with whole-sector writes and reads of the first 64 sectors. Every request must get
# exactly one reply (simple; or with "structured", for READ a chain of chunks ending in one marked
# done, for the others either form, as the NBD spec allows) carrying its own handle and an errno of 0, EINVAL or ENOSPC, on the same connection, and every
# sector read back must hold what was last written to it. Writes above 40 MiB
# (which close the connection by design) and DISC are left out. Prints one JSON line; any failure
# exits non-zero.
import json
import random
import socket
import struct
import sys

host, port, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
structured = sys.argv[5:] == ["structured"]
rng = random.Random(seed)

NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_INFO, NBD_INFO_EXPORT = 7, 8, 1, 3, 0
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
    """The replies to one option, up to its ACK: the export size if an INFO_EXPORT came."""
    size = None
    while True:
        _magic, _opt, rep, length = struct.unpack(">QIII", recv_exact(sock, 20))
        data = recv_exact(sock, length)
        assert rep & 0x80000000 == 0, f"option error {rep:#x}"
        if rep == NBD_REP_INFO and struct.unpack(">H", data[:2])[0] == NBD_INFO_EXPORT:
            size = struct.unpack(">Q", data[2:10])[0]
        if rep == NBD_REP_ACK:
            return size


def connect():
    sock = socket.create_connection((host, port), timeout=60)
    greeting = recv_exact(sock, 18)
    assert greeting[:8] == b"NBDMAGIC", greeting
    sock.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    if structured:
        sock.sendall(struct.pack(">QII", 0x49484156454F5054, NBD_OPT_STRUCTURED_REPLY, 0))
        option_replies(sock)
    # NBD_OPT_GO, default export, no info requests.
    sock.sendall(struct.pack(">QII", 0x49484156454F5054, NBD_OPT_GO, 6) + struct.pack(">IH", 0, 0))
    return sock, option_replies(sock)


chunks_seen = 0


def read_reply(sock, handle, kind, offset, length, where):
    """(errno, data read) of the reply to the request with `handle`."""
    magic = struct.unpack(">I", recv_exact(sock, 4))[0]
    if magic == SIMPLE_REPLY_MAGIC:
        assert not (structured and kind == READ), f"{where}: a simple reply to a READ after structured replies"
        err, got = struct.unpack(">IQ", recv_exact(sock, 12))
        assert got == handle, f"{where}: reply for handle {got:#x}"
        return err, recv_exact(sock, length) if kind == READ and err == 0 else b""
    assert structured and magic == STRUCTURED_REPLY_MAGIC, f"{where}: reply magic {magic:#x}"
    global chunks_seen
    # Allocated on the first data chunk: a failing READ may ask for up to 4 GiB.
    data, covered, err = None, 0, 0
    while True:
        chunks_seen += 1
        flags, chunk, got, size = struct.unpack(">HHQI", recv_exact(sock, 16))
        assert got == handle, f"{where}: chunk for handle {got:#x}"
        payload = recv_exact(sock, size)
        if chunk & CHUNK_ERROR_BIT:
            assert err == 0, f"{where}: two error chunks"
            err = struct.unpack(">I", payload[:4])[0]
        elif chunk in (CHUNK_OFFSET_DATA, CHUNK_OFFSET_HOLE):
            assert kind == READ, f"{where}: data chunk for type {kind}"
            at = struct.unpack(">Q", payload[:8])[0] - offset
            piece = payload[8:] if chunk == CHUNK_OFFSET_DATA else bytes(struct.unpack(">I", payload[8:12])[0])
            assert 0 <= at and at + len(piece) <= length, f"{where}: chunk outside the request"
            if data is None:
                data = bytearray(length)
            data[at : at + len(piece)] = piece
            covered += len(piece)
        else:
            assert chunk == CHUNK_NONE, f"{where}: chunk type {chunk}"
        if flags & CHUNK_DONE:
            break
        magic = struct.unpack(">I", recv_exact(sock, 4))[0]
        assert magic == STRUCTURED_REPLY_MAGIC, f"{where}: chunk magic {magic:#x} inside a chain"
    assert err != 0 or kind != READ or covered == length, f"{where}: read covered {covered} of {length}"
    return err, bytes(data) if err == 0 and data is not None else b""


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


sock, size = connect()
model = Model(size)
replies = {}
checked_reads = 0
for i in range(count):
    handle = rng.getrandbits(64)
    # Most requests are whole-sector writes and reads of a few sectors, so reads often follow writes.
    if rng.random() < 0.6:
        offset, length = rng.randrange(CHECKED_SECTORS) * SECTOR, SECTOR
        if rng.random() < 0.5:
            kind, flags, payload = WRITE, rng.choice([0, 1]), rng.randbytes(1) * SECTOR
        else:
            kind, flags, payload = READ, 0, b""
    else:
        kind, flags, offset, length, payload = random_request(size)
    sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, kind, handle, offset, length) + payload)
    where = f"request {i}: type {kind} flags {flags:#x} offset {offset} length {length}"
    err, data = read_reply(sock, handle, kind, offset, length, where)
    assert err in ALLOWED_ERRNOS, f"{where}: errno {err}"
    replies[f"{kind}/{err}"] = replies.get(f"{kind}/{err}", 0) + 1
    if err != 0:
        continue
    if kind == READ:
        bad = model.mismatch(offset, data)
        assert bad is None, f"{where}: byte {bad} reads {data[bad - offset]:#x}, not {model.data[bad]:#x}"
        checked_reads += 1
        model.learn(offset, data)
    elif kind == WRITE:
        model.learn(offset, payload)
    elif kind == WRITE_ZEROES:
        model.learn(offset, bytes(length))
    elif kind == TRIM:
        model.forget(offset, length)

sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, DISC, 0, 0, 0))
sock.close()
print(json.dumps({"requests": count, "checked_reads": checked_reads, "chunks": chunks_seen, "replies": replies}))
