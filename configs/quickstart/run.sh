#!/usr/bin/env bash
# The offline quickstart: the whole flow of tlcli on real data that ships with scikit-learn.
#   1. export the 1,797 bundled 8x8 handwritten digits as class folders
#   2. train a small CNN from scratch on digits 0-4           (the "pretrained" source)
#   3. transfer its base to digits 5-9 with 10 labels a class (head first, then fine-tuning)
#   4. the control: the same 10 labels a class, no transfer
#   5. evaluate the transferred run, predict a few images, list the runs
# Run from the project root: bash configs/quickstart/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export TLCLI_CACHE_DIR="${TLCLI_CACHE_DIR:-$PWD/runs/.cache}"

tlcli datasets digits data/digits
tlcli train configs/quickstart/source.yaml
tlcli train configs/quickstart/target.yaml
tlcli train configs/quickstart/target-scratch.yaml
target_run=$(tlcli runs --json | python3 -c 'import json,sys; print([r["path"] for r in json.load(sys.stdin) if r["name"] == "digits-target" and r["status"] == "completed"][-1])')
tlcli evaluate "$target_run"
tlcli predict data/digits/target/val/7 --run "$target_run" --top-k 2 --format csv | head -6
tlcli runs
