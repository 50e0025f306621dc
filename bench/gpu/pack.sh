#!/usr/bin/env bash
# Packs what a bare GPU machine (Python + CUDA, no Node) needs to run @vikdf/core's benchmark: this
# machine's Node binary, a flat node_modules with @vikdf/core's built dist and its runtime dependencies
# (onnxruntime-node for linux-x64 only), and the Vulkan loader packages for ONNX Runtime's WebGPU provider.
# Output: .gpu/ at the repository root (ignored by git). Run after `pnpm -r build`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/.gpu"
grep -qx '/.gpu/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >>"$ROOT/.git/info/exclude"
rm -rf "$OUT" && mkdir -p "$OUT/app/node_modules/@vikdf/core" "$OUT/app/node_modules/@huggingface"

xz -T2 -6 -c "$(readlink -f "$(command -v node)")" >"$OUT/node.xz"

resolve() { (cd "$ROOT/packages/core" && node -e "const p=require('path');console.log(p.dirname(require.resolve('$1/package.json')))" 2>/dev/null) || \
  (cd "$ROOT/packages/core" && node -e "
    const fs=require('fs'),p=require('path');let d=p.dirname(require.resolve('$1'));
    while(!fs.existsSync(p.join(d,'package.json'))) d=p.dirname(d); console.log(d)"); }
copy() { local src; src="$(resolve "$1")"; mkdir -p "$OUT/app/node_modules/$1"; cp -rL "$src/." "$OUT/app/node_modules/$1/"; }
for dep in onnxruntime-node @huggingface/tokenizers @huggingface/jinja eventemitter3; do copy "$dep"; done
ORT_COMMON="$(cd "$(resolve onnxruntime-node)" && node -e "const p=require('path');let d=p.dirname(require.resolve('onnxruntime-common'));const fs=require('fs');while(!fs.existsSync(p.join(d,'package.json')))d=p.dirname(d);console.log(d)")"
mkdir -p "$OUT/app/node_modules/onnxruntime-common" && cp -rL "$ORT_COMMON/." "$OUT/app/node_modules/onnxruntime-common/"
# Only the Linux x64 binaries of onnxruntime-node.
find "$OUT/app/node_modules/onnxruntime-node/bin/napi-v6" -mindepth 1 -maxdepth 1 ! -name linux -exec rm -rf {} +
find "$OUT/app/node_modules/onnxruntime-node/bin/napi-v6/linux" -mindepth 1 -maxdepth 1 ! -name x64 -exec rm -rf {} +
cp -r "$ROOT/packages/core/package.json" "$ROOT/packages/core/dist" "$OUT/app/node_modules/@vikdf/core/"
tar -C "$OUT" -cJf "$OUT/app.tar.xz" app && rm -rf "$OUT/app"

# Vulkan loader and GL vendor libraries (the device tool's recipe), for the WebGPU provider.
mkdir -p "$OUT/gl" /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update -qq >/dev/null
(cd "$OUT/gl" && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
du -sh "$OUT"/*
