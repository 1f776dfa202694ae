// Every limit of the system in one place, each with the reason for its value.

/** Size of one register. Fixed by the atdd wire format (SPEC §1). */
export const SECTOR_SIZE_BYTES = 4096;

/** Largest number of replicas: ranks are a u8 and rank 0 means "never written" (SPEC §2). */
export const MAX_REPLICAS = 254;

/**
 * Most sectors in one range message (extensions 0x82..0x8D): 1 MiB of data, so one message per
 * hop carries a typical sequential request (the kernel and qemu split at 128 KiB..1 MiB) while a
 * single message never holds a peer link for more than about a millisecond.
 */
export const MAX_RANGE_SECTORS = 256;

/**
 * Most sectors one HELD_MAP (0x8E) asks about: 128 MiB of volume, a 4 KiB bitmap in the answer.
 * It is answered from the replica's in-memory index with no register operation and no data, so
 * it can span far more than a range message; BLOCK_STATUS over a big sparse volume then costs a
 * command per 128 MiB per replica, not one per MiB.
 */
export const HELD_MAP_MAX_SECTORS = 32_768;

/**
 * Sectors per page of a HELD_PAGES (0x8F) answer: 4 MiB of volume, the sector index's own page
 * (slot_store.ts: an index page exists once any of its sectors was written), so a replica answers
 * a page from whether that page exists, in time that follows the pages written, not the range.
 */
export const HELD_PAGE_SECTORS = 1024;

/**
 * Most pages one HELD_PAGES asks about: 128 GiB of volume, a 4 KiB bitmap in the answer. With
 * HELD_MAPs only, BLOCK_STATUS over a 1 TiB volume with 16 MiB written cost 8192 maps per replica
 * (`nbdinfo --map` 1.8-1.9 s, the gateway 1.4 s of CPU); the gateway now asks HELD_PAGES first and
 * HELD_MAPs only for the pages some replica holds.
 */
export const HELD_PAGES_MAX = 32_768;

/**
 * `atomic-disk status --held`: HELD_MAPs in flight per replica. One at a time, a 1 TiB volume's
 * 8192 maps waited a round trip each; a few at once keep the replica busy without queueing much
 * ahead of the register traffic it also serves.
 */
export const STATUS_HELD_MAPS_IN_FLIGHT = 8;

/**
 * Largest atdd message (a full WRITE_RANGE_PROC / RANGE_VALUE: 64 + 256 * (8 + 16 + 4096) bytes);
 * decoders never buffer more than this per message.
 */
export const MAX_ATDD_MESSAGE_BYTES = 64 + MAX_RANGE_SECTORS * (8 + 16 + 4096);

/** Largest volume: sector indexes travel as u64 but are handled as JS numbers (safe up to 2^53). */
export const MAX_SECTORS = 2 ** 40;

/**
 * Retransmission of an unfinished phase (stubborn links, SPEC §2). Short enough that a lost message
 * costs little, long enough that a loaded replica is not flooded with copies; doubled each time.
 */
export const RETRANSMIT_INITIAL_MS = 250;
export const RETRANSMIT_MAX_MS = 4_000;

/**
 * Register core rule 2: own tags are reserved this many timestamps ahead with one durable write
 * (tag_reservation.ts), so a reservation is rare (once per restart, then once per 2^20 increments
 * of the highest timestamp), and a restart skips at most this much of the u64 timestamp space.
 */
export const TAG_RESERVATION_STEP = 2n ** 20n;

/** How often a replica driver ticks its register core (drives retransmission). */
export const CORE_TICK_MS = 50;

/** Reconnect backoff for peer and gateway links. */
export const RECONNECT_INITIAL_MS = 50;
export const RECONNECT_MAX_MS = 2_000;

/**
 * Register-core cache of sector contents (32 MiB of data at most). Beyond this many idle sectors
 * the least recently used are evicted (their state stays on disk), so memory follows the sectors
 * in use, not the volume. A miss costs little since rules 7 and 9 (peers answer from the store's
 * index; only a read's coordinator loads data, one loadMany per step), while every cached sector
 * is objects the garbage collector traces on each mark-compact, which external memory (socket
 * chunks, frames) triggers several times a second under load: measured with 256 MiB volumes,
 * 1 MiB writes after random 4 KiB writes took 18.7-20.7 ms of cluster CPU per MiB with 8192
 * against 21.4-22.8 with 32768, random 4 KiB writes about the same, random reads of a volume
 * half of which a 32768 cache held within the noise.
 */
export const CORE_CACHE_SECTORS = 8_192;

/**
 * Bytes queued on one socket before we stop reading from its peer (back-pressure). A peer that
 * does not drain its replies cannot make us buffer without bound.
 */
export const SOCKET_HIGH_WATER_BYTES = 8 * 1024 * 1024;

/**
 * Sectors of client commands one connection may have in flight at a replica before we pause
 * reading it (a range command of k sectors counts k): bounds the write data a client can make a
 * replica hold to 16 MiB per connection, whatever the command sizes.
 */
export const MAX_CLIENT_INFLIGHT_SECTORS_PER_CONNECTION = 4_096;

/**
 * Storage: synchronous page-cache writes (node_file_io.ts) may hold the event loop this long
 * before the writer lets it turn: long enough to amortise the turn, short next to a write's
 * latency (milliseconds), so a big batch's many slot writes never stall the replica.
 */
export const SYNC_WRITE_SLICE_MS = 2;

/**
 * Replica: accepted connections that have not yet sent an authenticated message. Past this, a new
 * one evicts the oldest (connection_admission.ts), so idle sockets, which need no key, can pin at
 * most this many partial messages (~1 MiB each) and never lock a reconnecting peer out.
 */
export const MAX_UNIDENTIFIED_CONNECTIONS = 64;

/**
 * Replica: client connections (identified by an authenticated client command). Gateways use a few
 * each; past this, new ones are closed. Bounds the write data clients can make a replica hold to
 * this times MAX_CLIENT_INFLIGHT_SECTORS_PER_CONNECTION (2 GiB). Peers are not limited: they hold
 * the system key, and there are N-1 of them.
 */
export const MAX_CLIENT_CONNECTIONS = 128;

/**
 * Storage group commit (slot_store.ts): most sectors in one batch (one writev set, one fdatasync).
 * 1024 sectors = 4 MiB: four 1 MiB range writes share a sync, while one batch's write and sync stay
 * a few milliseconds, so persists arriving meanwhile wait little for the next one. It also bounds
 * how far the free slots can exceed their reserve (a batch frees at most as many as it takes) and
 * the data recovery reads to check the last batch.
 */
export const GROUP_COMMIT_MAX_SECTORS = 1024;

/**
 * Storage group commit: most batches in flight at once (slot_store.ts): a persist arriving while a
 * batch syncs gets its own batch and fdatasync at once instead of queueing behind it. fdatasyncs of
 * one file overlap here, but each gets slower (this VM, virtio, ext4: 16 sequential pages + sync
 * 0.26 -> 0.18 ms per batch at depth 2, but 0.24 -> 0.35 ms each; 8 random pages 0.55 -> 0.45 ms
 * per batch, 0.52 -> 0.80 ms each), so depth buys latency only where persists arrive spread in
 * time, and costs CPU (more, smaller batches). Measured with storage_bench `--only compare` (depths
 * side by side, alternating 1 s windows: the disk drifts 2-3x over minutes), random overwrites of
 * 65536 written sectors arriving at 5k/10k/20k/30k per s, mean latency at depth 1: 0.47-0.49 /
 * 0.55 / 0.74-0.75 / 1.03-1.08 ms; depth 2: 0.36-0.40 / 0.43-0.45 / 0.60-0.61 / 0.78-0.85 ms
 * (-20 to -28%); depth 3 and 4 within 0.05 ms of depth 2 except 0.73-0.77 ms at 30k. CPU per
 * persist, depth 1 -> 2: +6-9% at 5k/s to +21-24% at 30k/s, depth 3-4 another 2-9%. 256-sector
 * runs 8 in flight (two full batches queued): 211-215 -> 293-316 MiB/s at depth 2, 345-347 at
 * 3-4. Where all callers wait in the same batch (a closed loop of 64 persists, runs 1 or 4 in
 * flight) depth changes nothing (47-50k persists/s, 209-244 MiB/s at every depth). So 2: nearly
 * all the latency gain for the least CPU. It also bounds what recovery checks (the newest 2
 * batches) and the extra free space (one batch's worth).
 */
export const GROUP_COMMIT_DEPTH = 2;

/**
 * Slots of zeros the sector file is grown by ahead of an appending batch (slot_store.ts); 0: the
 * file grows by exactly the slots a batch appends. Zeros ahead spare the fdatasyncs block
 * allocation (this VM, ext4: an fdatasync after 64 contiguous 4 KiB writes that extend the file
 * 572-683 µs, on blocks already written 262-432 µs), and the store alone did not mind them (new
 * sectors, 64 single persists in flight: none 193-205 MiB/s at 15-16 µs CPU per sector, 256
 * slots 186-232 MiB/s at 13-17; 1024 slots 115-129 MiB/s at 25-27). Through the gateway they cost
 * more than they save: every sector appended is a page created twice (zeros, then its data) in
 * the event loop's synchronous writes, and under random writes those page-creating writes took
 * 110 µs each at the median against 13 µs for overwrites (strace of a replica; its profile: 33% of
 * its busy time in pwrite on fresh sectors, 13% on overwrites). Measured 2026-12-02, a fresh
 * cluster each, random 4 KiB writes at QD32 onto the never-written half of a 512 MiB volume (after
 * 9 s of writes to the other half): 256 slots 205 and 204 µs of cluster CPU per write (6.6k and
 * 6.7k/s), none 172 and 140 µs (7.6k and 9.6k/s); sequential 1 MiB writes onto the never-written
 * 768 MiB of a 1 GiB volume (after 6 s of random writes to the rest), three interleaved pairs:
 * 256 slots 98.9 / 101.0 / 96.9 MB/s, none 97.5 / 119.5 / 115.0; two interleaved `bench-nbd`
 * pairs, first sequential pass after the random writes: 127.8 / 127.3 MB/s at 15.0 / 14.7 ms per
 * MiB against 141.8 / 133.9 MB/s at 13.3 / 13.8.
 */
export const SLOT_FILE_GROWTH_SLOTS = 0;

/**
 * The sector file keeps at least 1/16 of its slots free (slot_store.ts): while more are free, new
 * states take free slots from the groups (64 slots) with the most free slots, and the file grows
 * only when fewer are free. The reserve is what lets a batch find groups denser than average, so
 * it touches a few meta pages and writes runs of neighbouring slots instead of pages all over the
 * file. That matters a lot here: a 4 KiB page-cache write to a clean page costs ~5 µs in file
 * order but ~17-20 µs at random offsets of a 256 MiB file (measured before the store kept its
 * page-cache folios small, node_file_io.ts: large folios were much of that gap), and the fdatasync
 * of 64 scattered pages ~4-5 ms against ~1 ms within 2.5 MiB (this VM, ext4). Measured, random
 * overwrites of 65536 written sectors, 64 persists in flight: lowest-free-slot-first (free slots
 * are then just the previous batch's, i.e. random) 8.3k persists/s at 80 µs CPU each; a next-fit
 * sweep without a reserve 17-23k/s at 26-31 µs, with this reserve 23-35k/s at 19-25 µs (the
 * journal store: 21-31k/s at 24-34 µs); fullest groups first with this reserve about the same
 * (39-48k/s against 43-46k in another run), and far better for sequential runs (slot_store.ts,
 * "Allocation").
 * Why 1/16 and not 1/32: the larger the reserve, the denser the fullest groups a batch finds once
 * random writes have scattered the free slots, so sequential runs after random writes gather
 * faster. Measured, 65536 sectors filled, 40k random overwrites, then passes of 256-sector runs (4
 * in flight): 1/32: 9.5, 8.3, 7.3 µs CPU per sector in passes 1-3 and 42k, 38k write calls in
 * passes 2-3; 1/16: 8.1, 6.4, 5.4 µs and 31k, 22k; random overwrites 42k against 40k persists/s.
 * Through NBD (bench-nbd, sequential 1 MiB writes after random writes): 77 and 84 MB/s against 87,
 * 87 and 92; random 4 KiB writes unchanged within noise. Costs ~6% of space: with the 1.6% of meta
 * pages ~8% over 4096 B per written sector plus a constant (SPEC §3 allows ~10%); 1/10 gathered no
 * faster through NBD and is over that bound.
 */
export const SLOT_FREE_RESERVE_DIVISOR = 16;

/** NBD: largest READ/WRITE payload accepted (the kernel's max_hw_sectors is 32 MiB). */
export const NBD_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;

/**
 * NBD: most bytes one BLOCK_STATUS reply describes. A reply may describe less than was asked
 * (proto.md) and clients ask again from where it ended, so this bounds one request's work, not
 * what can be mapped. 4 GiB is more than a request can ask (its length is a u32): the work stays
 * one HELD_PAGES and at most 32 HELD_MAPs (HELD_MAP_MAX_SECTORS each, only for held pages) per
 * replica, and a 128 KiB bitmap. Replies of 1 GiB made `nbdinfo --map` of a 1 TiB volume 1024 round trips; each costs
 * about as much as a 4 GiB one now that maps skip unwritten index pages and whole bytes.
 */
export const NBD_BLOCK_STATUS_MAX_BYTES = 4 * 1024 * 1024 * 1024;

/**
 * NBD: most extents in one BLOCK_STATUS reply (8 bytes each, so a 128 KiB reply). A volume that
 * alternates written and unwritten sectors would otherwise need one per sector of the 1 GiB.
 */
export const NBD_BLOCK_STATUS_MAX_EXTENTS = 16_384;

/** NBD: handshake options one client may send before we close (as nbdkit's MAX_NR_OPTIONS). */
export const NBD_MAX_OPTIONS = 32;

/** NBD: longest option payload; export names and meta-context queries are tiny. */
export const NBD_MAX_OPTION_BYTES = 64 * 1024;

/**
 * NBD: a request that has not completed in this time fails with EIO. Below the kernel's default
 * 30 s nbd-client timeout so the gateway answers before the kernel tears the socket down.
 */
export const NBD_REQUEST_TIMEOUT_MS = 25_000;

/**
 * NBD: sectors one gateway keeps in flight to the replicas (a range command of k sectors counts
 * k). 8 MiB: eight 1 MiB range commands, what a queue depth of 8 sequential 1 MiB requests needs,
 * and 2048 single-sector commands for random I/O from many connections.
 */
export const GATEWAY_MAX_INFLIGHT_SECTORS = 2048;

/**
 * Gateway: writes go to one replica until it has this many sectors in flight, then to the next
 * (replica_pool.ts). A coordinator groups at most 256 sectors into one operation (register core
 * rule 8), so more than that in flight at one replica shares nothing more.
 */
export const GATEWAY_WRITE_PACK_SECTORS = 256;

/** Client connect to a replica: a dead host must fail fast enough to try another replica. */
export const REPLICA_CONNECT_TIMEOUT_MS = 5_000;

/** Bad input from the network (bad tags, garbage) is counted always but logged at most this often. */
export const BAD_INPUT_LOG_INTERVAL_MS = 10_000;

/**
 * Replica and gateway log one "activity" line (rates, latency percentiles, event-loop delay) per
 * this interval in which anything happened: often enough to follow a load as it changes, few
 * enough lines (8,640 a day at most) to keep in any log. `--activity-log-ms 0` turns them off.
 */
export const ACTIVITY_LOG_INTERVAL_MS = 10_000;

/** TCP keepalive on peer links: notices a peer host that vanished without a reset. */
export const PEER_KEEPALIVE_DELAY_MS = 1_000;

/** NBD: WRITE payloads above this are not even skipped: the stream is treated as garbage and closed. */
export const NBD_ABSURD_PAYLOAD_BYTES = 64 * 1024 * 1024;

/** NBD: requests one connection may have in flight before we stop reading it (kernel queues hold 128). */
export const NBD_MAX_INFLIGHT_REQUESTS_PER_CONNECTION = 256;

/** NBD: request payload and read-reply bytes one connection may hold before we stop reading it. */
export const NBD_MAX_INFLIGHT_BYTES_PER_CONNECTION = 128 * 1024 * 1024;

/**
 * NBD: open client connections the gateway accepts; later ones are closed at once (and logged).
 * Multi-connection clients use a handful (nbd-client -C, qemu, nbdcopy: 4-16); the limit bounds
 * the in-flight bytes all connections together can make the gateway hold (8 GiB at worst).
 */
export const NBD_MAX_CONNECTIONS = 64;

/** NBD: a client must finish option haggling within this time, or an idle socket is held forever. */
export const NBD_HANDSHAKE_TIMEOUT_MS = 60_000;

/**
 * Log lines: a descriptor that cannot take a line now (a non-blocking pipe whose reader lags) is
 * retried every LOG_WRITE_RETRY_MS for at most LOG_WRITE_RETRY_TOTAL_MS, then the line is dropped:
 * writes are synchronous, so waiting longer would stall the event loop that serves storage.
 */
export const LOG_WRITE_RETRY_MS = 2;
export const LOG_WRITE_RETRY_TOTAL_MS = 50;
