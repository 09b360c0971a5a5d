#!/usr/bin/env bash
# Installs the ONNX Runtime shared library that `ort` loads at run time into the project's
# git-ignored cache (.cache/onnxruntime). The PyPI wheel carries the full C API library, and PyPI
# is reachable where GitHub release downloads are not, so the wheel is the source.
set -euo pipefail
ORT_VERSION="${ORT_VERSION:-1.32.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/onnxruntime"
lib="$dest/libonnxruntime.so"
if [[ -f "$lib" && -f "$dest/VERSION" && "$(cat "$dest/VERSION")" == "$ORT_VERSION" ]]; then
  exit 0
fi
echo "installing ONNX Runtime $ORT_VERSION into $dest" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "onnxruntime==$ORT_VERSION" -d "$tmp"
python3 - "$tmp" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/onnxruntime-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("onnxruntime/capi/libonnxruntime.so"):
            z.extract(n, sys.argv[1])
PY
mkdir -p "$dest"
so="$(ls "$tmp"/onnxruntime/capi/libonnxruntime.so.* | head -n1)"
# Copy to a temporary name and rename, so an interrupted install never leaves a half library.
cp "$so" "$dest/libonnxruntime.so.partial"
mv "$dest/libonnxruntime.so.partial" "$lib"
echo "$ORT_VERSION" > "$dest/VERSION"
echo "ONNX Runtime $ORT_VERSION installed: $lib" >&2
