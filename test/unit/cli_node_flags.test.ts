import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { SERVER_NODE_FLAGS } from "../../src/cli/node_flags.js";

describe("server node flags", () => {
  it("the atomic-disk script's shebang passes exactly SERVER_NODE_FLAGS to node", () => {
    const firstLine = readFileSync(new URL("../../src/cli/main.ts", import.meta.url), "utf8").split("\n")[0];
    expect(firstLine).toBe(`#!/usr/bin/env -S node ${SERVER_NODE_FLAGS.join(" ")}`);
  });

  it("the Docker image's entry point passes exactly SERVER_NODE_FLAGS to node", () => {
    const dockerfile = readFileSync(new URL("../../docker/Dockerfile", import.meta.url), "utf8");
    const entry = dockerfile.split("\n").find((line) => line.startsWith("ENTRYPOINT "));
    expect(entry).toBe(
      `ENTRYPOINT ${JSON.stringify(["node", ...SERVER_NODE_FLAGS, "/app/dist/cli/main.js"]).replaceAll(",", ", ")}`,
    );
  });
});
