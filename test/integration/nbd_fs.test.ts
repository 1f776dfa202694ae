// A real kernel file system on the gateway: nbdfuse exposes the export as a file, a loop device
// turns it into a block device, ext4 goes on top (4 KiB blocks, and 1 KiB blocks for sub-sector
// I/O). Files written, unmounted, fsck'd, remounted and compared. Needs root, /dev/fuse and loop.
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLIENT_ENV, type Gateway, run, runAsync, startGateway, which } from "./nbd_gateway.js";

const SIZE_BYTES = 96 * 1024 * 1024;
const canMount =
  process.getuid?.() === 0 &&
  existsSync("/dev/fuse") &&
  existsSync("/dev/loop-control") &&
  ["nbdfuse", "losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount", "fusermount3"].every(which);
const skipReason = "needs root, /dev/fuse, loop devices, nbdfuse, e2fsprogs";

let gw: Gateway;

beforeAll(async () => {
  if (!canMount) return;
  gw = await startGateway({ sectors: SIZE_BYTES / 4096 });
}, 60_000);

afterAll(async () => {
  await gw?.stop();
});

function sha(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

interface Attached {
  loop: string;
  detach(): Promise<void>;
}

/** nbdfuse exposes the export as a file in a fresh FUSE mount; losetup makes it a block device. */
async function attach(dir: string): Promise<Attached> {
  const fuseDir = mkdtempSync(join(dir, "fuse-"));
  const pidFile = join(fuseDir, "..", `${fuseDir.split("/").at(-1)}.pid`);
  // nbdfuse serves in the foreground; it writes the pid file once the FUSE mount is ready.
  const fuse: ChildProcess = spawn("nbdfuse", ["-P", pidFile, join(fuseDir, "disk"), gw.uri], {
    env: CLIENT_ENV,
    stdio: "ignore",
  });
  let loop: string | undefined;
  const detach = async () => {
    if (loop !== undefined) run("losetup", ["-d", loop]);
    run("fusermount3", ["-u", fuseDir]);
    for (let i = 0; i < 50 && fuse.exitCode === null && fuse.signalCode === null; i++) await sleep(100);
    if (fuse.exitCode === null && fuse.signalCode === null) fuse.kill("SIGKILL");
  };
  try {
    for (let i = 0; i < 150 && !existsSync(pidFile) && fuse.exitCode === null; i++) await sleep(100);
    expect(existsSync(join(fuseDir, "disk"))).toBe(true);
    const lo = run("losetup", ["-f", "--show", join(fuseDir, "disk")]);
    expect(lo.status, lo.stderr).toBe(0);
    loop = lo.stdout.trim();
    return { loop, detach };
  } catch (err) {
    await detach();
    throw err;
  }
}

/**
 * mkfs + files through one attachment; then a fresh attachment (new nbdfuse, new loop device, so
 * nothing can come from a client-side cache) must fsck clean and give back the same files.
 */
async function ext4RoundTrip(blockBytes: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "atomic-disk-fs-"));
  const mnt = join(dir, "mnt");
  mkdirSync(mnt);
  let mounted = false;
  let attached: Attached | undefined;
  try {
    attached = await attach(dir);
    const mkfs = await runAsync("mkfs.ext4", ["-q", "-F", "-b", String(blockBytes), attached.loop], 120_000);
    expect(mkfs.status, mkfs.stderr).toBe(0);
    expect(run("mount", [attached.loop, mnt]).status).toBe(0);
    mounted = true;
    const sums = new Map<string, string>();
    for (let i = 0; i < 8; i++) {
      const name = `file-${i}`;
      // Odd sizes exercise partial blocks and partial sectors.
      writeFileSync(join(mnt, name), randomBytes(1000 + i * 300_001));
      sums.set(name, sha(join(mnt, name)));
    }
    expect(run("sync", []).status).toBe(0);
    expect(run("umount", [mnt]).status).toBe(0);
    mounted = false;
    await attached.detach();
    attached = undefined;

    attached = await attach(dir);
    const fsck = await runAsync("fsck.ext4", ["-fn", attached.loop], 120_000);
    expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
    expect(run("mount", [attached.loop, mnt]).status).toBe(0);
    mounted = true;
    for (const [name, sum] of sums) expect(sha(join(mnt, name)), name).toBe(sum);
  } finally {
    if (mounted) run("umount", [mnt]);
    await attached?.detach();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!canMount)(`ext4 on the gateway via nbdfuse + loop (${skipReason})`, () => {
  it("mkfs.ext4 (4 KiB blocks), write files, umount, fsck -fn clean, remount, same checksums", async () => {
    await ext4RoundTrip(4096);
  }, 200_000);

  it("the same with 1 KiB ext4 blocks: sub-sector writes go through read-modify-write", async () => {
    await ext4RoundTrip(1024);
  }, 200_000);
});
