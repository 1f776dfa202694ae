// Prints `tests: N passed, N failed` from vitest's JSON report; exits 1 when anything failed or
// the report is missing (a suite that crashed before reporting must not look green).
import { readFileSync } from "node:fs";

const path = process.argv[2] ?? "test-results/vitest.json";
let report;
try {
  report = JSON.parse(readFileSync(path, "utf8"));
} catch (err) {
  console.log("tests: 0 passed, 1 failed");
  console.error(`no vitest report at ${path}: ${err.message}`);
  process.exit(1);
}
const passed = report.numPassedTests ?? 0;
// Suites that failed to load count as failures: their tests never ran.
const failedSuites = (report.testResults ?? []).filter(
  (r) => r.status === "failed" && (r.assertionResults ?? []).length === 0,
).length;
const failed = (report.numFailedTests ?? 0) + failedSuites;
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
