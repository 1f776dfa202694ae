// Calibration of the machine a benchmark runs on, printed before bench-nbd's jobs so that runs on
// different VMs can be compared: the same code has measured 2-3x apart in CPU per operation, and
// nbdkit (the reference) 4-8x apart, between VMs of the same kind. Each line is one cost the cluster
// pays many times per operation and nbdkit pays once or not at all:
// - the round trip of a 64-byte message between two processes on loopback (a VM whose idle vCPUs
//   halt makes every wakeup of another process cost far more than the copy);
// - a 4 KiB pwrite + fdatasync in DIR (what nbdkit's forced FUA waits for on each write);
// - writing 1 MiB into page-cache pages the guest has not touched lately against overwriting
//   them (on a guest with free page reporting, a page's first touch after the host took it back
//   costs several times the copy: every sector a replica appends pays it);
// - HMAC-SHA256 of a 64-byte and of a 1 MiB message (Node's fixed cost per HMAC, and SHA-256's
//   speed: every message is signed and checked, every MiB hashed five times).
// Usage: node bench/machine.mjs DIR (a directory on the file system the benchmark writes to).
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { closeSync, fdatasyncSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";

const dir = process.argv[2];
if (!dir) throw new Error("usage: node bench/machine.mjs DIR");

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const microsSince = (t) => Number(process.hrtime.bigint() - t) / 1e3;

/** p50 round trip in µs of 64 bytes to an echo server in another process. */
async function loopbackRoundTripUs(rounds) {
  const echo = spawn(
    process.execPath,
    [
      "-e",
      `const s = require("net").createServer((c) => { c.setNoDelay(true); c.on("data", (d) => c.write(d)); });
       s.listen(0, "127.0.0.1", () => console.log(s.address().port));`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  try {
    const port = await new Promise((resolve, reject) => {
      echo.stdout.once("data", (d) => resolve(Number(String(d).trim())));
      echo.once("exit", () => reject(new Error("echo server exited")));
    });
    const socket = net.connect(port, "127.0.0.1");
    socket.setNoDelay(true);
    await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    const samples = [];
    await new Promise((resolve) => {
      let t = process.hrtime.bigint();
      socket.on("data", () => {
        samples.push(microsSince(t));
        if (samples.length === rounds) return resolve();
        t = process.hrtime.bigint();
        socket.write(Buffer.alloc(64));
      });
      socket.write(Buffer.alloc(64));
    });
    socket.destroy();
    return median(samples);
  } finally {
    echo.kill("SIGKILL");
  }
}

/** p50 µs of one 4 KiB pwrite at a scattered offset followed by fdatasync. */
function fdatasyncUs(path, rounds) {
  const fd = openSync(path, "w+");
  const page = randomBytes(4096);
  const samples = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const t = process.hrtime.bigint();
      writeSync(fd, page, 0, page.length, ((i * 7919) % 4096) * 4096);
      fdatasyncSync(fd);
      samples.push(microsSince(t));
    }
  } finally {
    closeSync(fd);
  }
  return median(samples);
}

/** CPU ms per MiB of buffered 1 MiB writes into a new file, then over the same pages. */
function pageCacheMsPerMiB(path, mib) {
  const fd = openSync(path, "w+");
  const chunk = Buffer.alloc(1 << 20, 7);
  const pass = () => {
    const before = process.cpuUsage();
    for (let i = 0; i < mib; i++) writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
    const used = process.cpuUsage(before);
    return (used.user + used.system) / 1e3 / mib;
  };
  try {
    return { fresh: pass(), overwrite: pass() };
  } finally {
    closeSync(fd);
  }
}

function hmacUs(bytes, rounds) {
  const key = randomBytes(64);
  const message = randomBytes(bytes);
  for (let i = 0; i < Math.min(rounds, 200); i++) createHmac("sha256", key).update(message).digest();
  const t = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) createHmac("sha256", key).update(message).digest();
  return microsSince(t) / rounds;
}

function cpuModel() {
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8")
      .split("\n")
      .find((l) => l.startsWith("model name"));
    return line ? line.split(":")[1].trim() : "?";
  } catch {
    return "?";
  }
}

const scratch = join(dir, "machine-calibration.tmp");
try {
  const rttUs = await loopbackRoundTripUs(3000);
  const syncUs = fdatasyncUs(scratch, 200);
  const pages = pageCacheMsPerMiB(scratch, 256);
  const small = hmacUs(64, 20_000);
  const large = hmacUs(1 << 20, 100);
  console.log(`machine: ${cpuModel()}, loopback round trip between two processes p50 ${rttUs.toFixed(0)} µs`);
  console.log(`machine: 4 KiB pwrite + fdatasync p50 ${syncUs.toFixed(0)} µs`);
  console.log(
    `machine: buffered 1 MiB writes ${pages.fresh.toFixed(2)} ms of CPU onto new pages, ${pages.overwrite.toFixed(2)} over them`,
  );
  console.log(
    `machine: HMAC-SHA256 ${small.toFixed(1)} µs for 64 B, ${(1048576 / large).toFixed(0)} MB/s for 1 MiB`,
  );
} finally {
  rmSync(scratch, { force: true });
}
