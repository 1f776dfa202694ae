#!/usr/bin/env bash
# Runs vitest with its JSON reporter and prints the one summary line CI reads:
#   tests: N passed, N failed
# Exits non-zero when any test failed or vitest itself failed.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-results
rm -f test-results/vitest.json
npx vitest run --reporter=default --reporter=json --outputFile.json=test-results/vitest.json "$@"
status=$?
node scripts/test-summary.mjs test-results/vitest.json
summary_status=$?
if [ $status -ne 0 ] || [ $summary_status -ne 0 ]; then exit 1; fi
