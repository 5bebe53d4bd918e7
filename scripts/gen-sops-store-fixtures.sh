#!/usr/bin/env bash
# Regenerates the expected outputs of the store fixtures with the real sops binary:
# for every agent/tests/fixtures/sops_stores/<fmt>/NAME.in.<ext>, NAME.out.<ext> is what
# `sops -d` prints after `sops -e` of the input (i.e. sops' own round trip), and NAME.enc.<ext>
# is the encrypted file itself (its throwaway key is discarded: the tests only re-serialize it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
age-keygen -o "$tmp/key.txt" 2>/dev/null
recipient=$(age-keygen -y "$tmp/key.txt")
export SOPS_AGE_KEY_FILE="$tmp/key.txt"
for dir in "$root"/agent/tests/fixtures/sops_stores/*/; do
  fmt=$(basename "$dir")
  for input in "$dir"*.in.*; do
    ext=${input##*.}
    out=${input%.in.*}.out.$ext
    enc=${input%.in.*}.enc.$ext
    # Existing encrypted fixtures are kept (new random IVs would only churn the diff) unless
    # FORCE=1; their decryption key is gone, so a kept one is not decrypted again.
    if [[ ! -e $enc || ${FORCE:-0} == 1 ]]; then
      sops -e --age "$recipient" --input-type "$fmt" --output-type "$fmt" "$input" > "$enc"
    fi
    sops -e --age "$recipient" --input-type "$fmt" --output-type "$fmt" "$input" > "$tmp/enc"
    sops -d --input-type "$fmt" --output-type "$fmt" "$tmp/enc" > "$out"
  done
done
