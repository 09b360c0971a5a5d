#!/usr/bin/env bash
# Checks that one build serves every command: after `make build` and `cargo test --workspace`,
# asking cargo for any single package (`cargo build --release -p X --all-targets`) must find
# every dependency already compiled. It fails naming the units cargo would compile again,
# which happens when a package's own feature choices differ from the workspace's (cargo
# resolves features per command): the workspace-hack package (crates/privynet-hack, made by
# `cargo hakari generate`) holds the union, and every member depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO="${CARGO:-cargo}"

# "name id" per workspace package.
packages=$("$CARGO" metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print("\n".join(p["name"] + " " + p["id"] for p in json.load(sys.stdin)["packages"]))')
failed=0
count=0
while read -r p id; do
    count=$((count + 1))
    # Every compiled unit cargo reports as not fresh, but for the package's own targets.
    stale=$("$CARGO" build --release -p "$p" --all-targets --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
own = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and not m.get("fresh", True):
        if m["package_id"] != own:
            print("  " + m["package_id"] + " (" + m["target"]["name"] + ")")
' "$id") || { echo "check-one-build: cargo build --release -p $p --all-targets failed" >&2; exit 1; }
    if [ -n "$stale" ]; then
        echo "check-one-build: \`cargo build --release -p $p --all-targets\` compiled again what the workspace build had:" >&2
        echo "$stale" >&2
        failed=1
    fi
done <<< "$packages"
if [ "$failed" -ne 0 ]; then
    echo "check-one-build: run \`cargo hakari generate && cargo hakari manage-deps\` (cargo install cargo-hakari), then make test" >&2
    exit 1
fi
echo "check-one-build: every package builds from the workspace build ($count packages, nothing recompiled)"
