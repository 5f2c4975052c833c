#!/bin/sh
# Stands in for the expensive build: gaia runs it in src/ with $OUT set to its output dir.
set -e
mkdir -p "$OUT/bin"
cp tool.sh "$OUT/bin/tool"
chmod 755 "$OUT/bin/tool"
echo "built at $(date +%s)" >> "$OUT/build.log"
echo "toolchain built"
