#!/usr/bin/env bash
# Fetches flyteidl 1.16.8's schema (a FileDescriptorSet) from its hash-pinned PyPI wheel into
# proto/flyteidl/.schema/, where libs/proto's build script reads it. Idempotent; ~1 s.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/proto/flyteidl/.schema/flyteidl-1.16.8.binpb
if [ -s "$out" ] && [ "${FORCE:-0}" != 1 ]; then exit 0; fi
python3 "$root/proto/flyteidl/fetch.py" "$out"
