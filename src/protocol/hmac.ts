// The HMAC-SHA256 tag that ends every atdd message and covers every byte before it (SPEC §1).
import { createHmac, timingSafeEqual } from "node:crypto";
import { assert } from "../util/assert.js";
import { HMAC_TAG_BYTES } from "./messages.js";

/** Writes the tag of `message[0 .. length-32)` into its last 32 bytes. */
export function signMessage(message: Buffer, key: Buffer): void {
  assert(message.length > HMAC_TAG_BYTES, "message too short to carry a tag");
  assert(key.length > 0, "empty HMAC key");
  const tagOffset = message.length - HMAC_TAG_BYTES;
  const tag = createHmac("sha256", key).update(message.subarray(0, tagOffset)).digest();
  tag.copy(message, tagOffset);
}

/** The tag of a message given as the parts before its tag (a frame's head and its data view). */
export function tagOf(key: Buffer, head: Buffer, data: Buffer): Buffer {
  assert(key.length > 0, "empty HMAC key");
  return createHmac("sha256", key).update(head).update(data).digest();
}

/**
 * True when the `size`-byte message at `buf[offset..]` ends with the right tag. Constant-time
 * comparison, so a forger learns nothing from how fast a guess is rejected.
 */
export function verifyMessageTag(buf: Buffer, offset: number, size: number, key: Buffer): boolean {
  assert(size > HMAC_TAG_BYTES && offset + size <= buf.length, "tag verification out of bounds");
  const tagOffset = offset + size - HMAC_TAG_BYTES;
  const expected = createHmac("sha256", key).update(buf.subarray(offset, tagOffset)).digest();
  return timingSafeEqual(expected, buf.subarray(tagOffset, tagOffset + HMAC_TAG_BYTES));
}
