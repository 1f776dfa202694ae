// Exclusive use of a replica data directory: a lock file created with O_EXCL holding the owner's
// pid. Two live replicas can never share a directory; a lock left by a dead process (kill -9,
// power loss) is taken over.
import { linkSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AtomicDiskError } from "../util/errors.js";

export const LOCK_FILE_NAME = "replica.lock";

/** Takeover attempts when racing another process for a stale lock. */
const LOCK_ATTEMPTS = 3;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export interface DataDirLock {
  path: string;
  release(): void;
}

export function lockDataDir(dir: string): DataDirLock {
  const path = join(dir, LOCK_FILE_NAME);
  // The lock appears with its pid already inside (link of a complete temp file), so a reader never
  // sees an empty lock and mistakes it for a stale one.
  const temp = join(dir, `${LOCK_FILE_NAME}.${process.pid}.tmp`);
  try {
    writeFileSync(temp, `${process.pid}\n`, { mode: 0o644 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AtomicDiskError("DATA_DIR_UNUSABLE", `data dir ${dir} is not writable: ${code ?? err}`);
  }
  try {
    return acquire(dir, path, temp);
  } finally {
    try {
      unlinkSync(temp);
    } catch {
      // Best effort: a leftover temp file is harmless and named after our pid.
    }
  }
}

function acquire(dir: string, path: string, temp: string): DataDirLock {
  for (let attempt = 0; attempt < LOCK_ATTEMPTS; attempt++) {
    try {
      linkSync(temp, path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EEXIST") {
        throw new AtomicDiskError("DATA_DIR_UNUSABLE", `cannot create lock file ${path}: ${code ?? err}`);
      }
      let ownerText = "";
      try {
        ownerText = readFileSync(path, "utf8").trim();
      } catch {
        continue; // removed meanwhile: try again
      }
      const owner = Number(ownerText);
      // Our own pid in the file means a previous life of this container/pid namespace left it.
      if (Number.isSafeInteger(owner) && owner > 0 && owner !== process.pid && pidAlive(owner)) {
        throw new AtomicDiskError(
          "DATA_DIR_UNUSABLE",
          `data dir ${dir} is in use by pid ${owner} (lock file ${path})`,
        );
      }
      try {
        unlinkSync(path);
      } catch {
        // Another process took it over first; the next attempt sees its lock.
      }
      continue;
    }
    let released = false;
    return {
      path,
      release: () => {
        if (released) return;
        released = true;
        try {
          unlinkSync(path);
        } catch {
          // Already gone: nothing to release.
        }
      },
    };
  }
  throw new AtomicDiskError("DATA_DIR_UNUSABLE", `cannot take lock file ${path}: contended`);
}
