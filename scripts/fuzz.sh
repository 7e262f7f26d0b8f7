#!/usr/bin/env bash
# Runs every Go fuzz target in the main module for a short time each
# (FUZZTIME, default 10s). A failure leaves its input under the package's
# testdata/fuzz/, which then runs as a regression case in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-10s}"
status=0
while IFS=: read -r file name; do
  pkg="./$(dirname "$file")"
  echo "fuzz: $pkg $name ($fuzztime)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >"/tmp/fuzz-$name.log" 2>&1; then
    cat "/tmp/fuzz-$name.log"
    status=1
  fi
done < <(grep -rHoP '^func \KFuzz\w+(?=\(f \*testing\.F\))' --include='*_test.go' cmd internal api | sort -u)
[ "$status" -eq 0 ] && echo "fuzz: every target ran $fuzztime without a failure"
exit "$status"
