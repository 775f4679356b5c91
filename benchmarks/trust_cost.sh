#!/usr/bin/env bash
# The data-trust step's cost on the speed benchmark's W1 (cold cache) and W3 (warm): the W1 config with the step on
# (tlcli's default) and off, interleaved, 3 repetitions; prints wall seconds and peak KB per run, and leaves each
# run's metrics (timings_s.trust) in OUT.
#   bash benchmarks/trust_cost.sh /path/to/cats_and_dogs_filtered OUT   (KERAS_HOME must hold MobileNet 0.25's weights)
set -u
data=${1:?cats_and_dogs_filtered folder}; out=${2:?output folder}
cd "$(dirname "$0")/.."
mkdir -p "$out"
for rep in 1 2 3; do
  for mode in on off; do
    extra=(); [ "$mode" = off ] && extra=(--set data.leakage=off --set data.label_suspects=false)
    cache=$(mktemp -d)
    for w in W1 W3; do
      TLCLI_CACHE_DIR=$cache /usr/bin/time -f "%e %M" -o "$out/$w-$mode-$rep.time" python -m tlcli train \
        benchmarks/configs/w1.yaml --set data.dir="$data" --set data.leakage=warn --set data.label_suspects=true \
        "${extra[@]}" --runs-dir "$out/runs-$w-$mode-$rep" --json > "$out/$w-$mode-$rep.json" 2> "$out/$w-$mode-$rep.err"
      echo "$w $mode $rep $(cat "$out/$w-$mode-$rep.time")"
    done
    rm -rf "$cache"
  done
done
