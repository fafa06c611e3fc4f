#!/usr/bin/env bash
# Writes the Collatz job's work units: inputs/unit-0000.txt, unit-0001.txt,
# ... beside this script, unit i holding "START+i*COUNT COUNT", so together
# they cover START .. START + N*COUNT - 1 without gap or overlap.
#
# usage: gen-inputs.sh [N [COUNT [START]]]
#   N      number of units, 1..9999            (default 20)
#   COUNT  numbers per unit, 1..100000000      (default 1000000)
#   START  first number, at least 1            (default 1)
# Earlier unit-*.txt files in inputs/ are removed first.
set -euo pipefail

n=${1:-20}
count=${2:-1000000}
start=${3:-1}

die() { echo "gen-inputs.sh: $*" >&2; exit 1; }
# Up to 18 digits keeps every value below 2^63 (bash arithmetic is signed).
for v in "$n" "$count" "$start"; do
    [[ $v =~ ^[0-9]{1,18}$ ]] || die "arguments must be decimal integers below 10^18, got '$v' (usage: gen-inputs.sh [N [COUNT [START]]])"
done
n=$((10#$n)); count=$((10#$count)); start=$((10#$start))
((n >= 1 && n <= 9999)) || die "N must be between 1 and 9999, got $n"
((count >= 1 && count <= 100000000)) || die "COUNT must be between 1 and 100000000, got $count"
((start >= 1)) || die "START must be at least 1"
# The last number, start + n*count - 1, must stay below 2^63 here.
max=9223372036854775807
((count <= (max - start + 1) / n)) || die "START + N*COUNT - 1 is too large for this script (limit 2^63 - 1)"

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/inputs"
mkdir -p "$dir"
rm -f "$dir"/unit-*.txt
for ((i = 0; i < n; i++)); do
    printf '%d %d\n' $((start + i * count)) "$count" > "$(printf '%s/unit-%04d.txt' "$dir" "$i")"
done
echo "wrote $n units of $count numbers ($start .. $((start + n * count - 1))) to $dir"
