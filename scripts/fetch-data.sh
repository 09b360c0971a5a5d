#!/usr/bin/env bash
# Puts CIFAR-10, SqueezeNet 1.1 and (from a mirror) EfficientNet-Lite0 under data/ (git-ignored),
# verified by checksum.
#
# With DATA_MIRROR=DIR (a folder laid out like data/: cifar-10/..., models/...), it verifies the
# mirror's files against data/checksums.sha256 and links them into data/ (nothing is copied).
# Without it, it downloads the official files and verifies them: the CIFAR-10 binary tarball
# from its author's page (checked against the MD5 its publisher gives, the only digest published
# for it), and the SqueezeNet 1.1 ONNX file from Microsoft's Windows-Machine-Learning repository
# at a pinned commit (sha256).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$root/data"
sums="$data/checksums.sha256"
mkdir -p "$data/cifar-10" "$data/models"

verify() { # verify FILE EXPECTED_SHA256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$got" != "$2" ]]; then
    echo "error: checksum mismatch for $1: expected sha256 $2, got $got" >&2
    return 1
  fi
}

if [[ -n "${DATA_MIRROR:-}" ]]; then
  mirror="$(cd "$DATA_MIRROR" 2>/dev/null && pwd)" || {
    echo "error: DATA_MIRROR=$DATA_MIRROR is not a folder" >&2; exit 1; }
  n=0
  while read -r sum rel; do
    [[ -z "$sum" || "$sum" == \#* ]] && continue
    src="$mirror/$rel"
    if [[ ! -f "$src" ]]; then
      echo "error: the mirror $mirror lacks $rel (expected a file laid out like ../shared/data)" >&2
      exit 1
    fi
    dst="$data/$rel"
    # A link that already points at the same verified file needs no second hash.
    if [[ -L "$dst" && "$(readlink "$dst")" == "$src" && -f "$dst.verified" ]]; then
      n=$((n + 1)); continue
    fi
    verify "$src" "$sum"
    mkdir -p "$(dirname "$dst")"
    ln -sfn "$src" "$dst"
    touch "$dst.verified"
    n=$((n + 1))
  done < "$sums"
  echo "data: $n files from the mirror $mirror verified and linked under data/" >&2
  exit 0
fi

# Without a mirror, files linked and verified by an earlier mirror run are as good as a fresh
# download: keep them rather than asking the network.
all_linked=1
while read -r sum rel; do
  [[ -z "$sum" || "$sum" == \#* ]] && continue
  [[ -e "$data/$rel" && -f "$data/$rel.verified" ]] || { all_linked=0; break; }
done < "$sums"
if [[ "$all_linked" == 1 ]]; then
  echo "data: every file of data/checksums.sha256 is already in place and verified" >&2
  exit 0
fi

fetch() { # fetch URL DEST
  if [[ -f "$2" ]]; then return 0; fi
  echo "downloading $1" >&2
  if ! curl -fL --retry 2 -o "$2.partial" "$1"; then
    rm -f "$2.partial"
    echo "error: could not download $1; on a machine without internet, point DATA_MIRROR at a folder laid out like data/ (e.g. DATA_MIRROR=../shared/data make data)" >&2
    exit 1
  fi
  mv "$2.partial" "$2"
}

tarball="$data/cifar-10/cifar-10-binary.tar.gz"
fetch "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" "$tarball"
got="$(md5sum "$tarball" | cut -d' ' -f1)"
if [[ "$got" != "c32a1d4ab5d03f1284b67883e8d87530" ]]; then
  echo "error: checksum mismatch for $tarball: expected md5 c32a1d4ab5d03f1284b67883e8d87530, got $got" >&2
  rm -f "$tarball"; exit 1
fi

model="$data/models/squeezenet1.1_fp16_opset7.onnx"
fetch "https://raw.githubusercontent.com/microsoft/Windows-Machine-Learning/044757481c274e4749f5c192962168520807b4cc/SharedContent/models/SqueezeNet_fp16.onnx" "$model"
verify "$model" "$(grep 'squeezenet1.1_fp16_opset7.onnx' "$sums" | cut -d' ' -f1)" || { rm -f "$model"; exit 1; }
echo "data: official CIFAR-10 and SqueezeNet 1.1 fetched and verified under data/" >&2
if [[ ! -e "$data/models/efficientnet-lite0_fp32_opset17.onnx" ]]; then
  echo "note: EfficientNet-Lite0 has no official ONNX file; its tests and pipeline need a mirror that holds models/efficientnet-lite0_fp32_opset17.onnx (how it was exported: data/README.md)" >&2
fi
