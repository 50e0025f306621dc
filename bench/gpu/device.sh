#!/usr/bin/env bash
# The GPU check, run ON a lent GPU machine (Python + CUDA image, no Node) from the repository root, after
# bench/gpu/pack.sh filled .gpu/ here and the device tool carried it:
#
#   bash bench/gpu/device.sh            (results and logs go to $OUT, or bench/results/gpu when unset)
#
# 1. unpacks Node, @vikdf/core with its dependencies, and the Vulkan loader (for the WebGPU provider);
# 2. builds the ~100M benchmark model with the machine's PyTorch (bench/make_models.py);
# 3. @vikdf/core with the providers in the default order (cuda, webgpu, cpu): which one runs, and why the
#    others were skipped; then the engine benchmark on that provider and, for comparison, on the CPU;
# 4. the PyTorch model of training/ with Hugging Face generate on CUDA, same contexts and lengths.
set -uo pipefail
OUT="${OUT:-bench/results/gpu}"
mkdir -p "$OUT"
exec > >(tee "$OUT/device.log") 2>&1
log() { printf '[gpu %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for f in .gpu/gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
mkdir -p /tmp/vikdf-gpu
xz -dc .gpu/node.xz >/tmp/vikdf-gpu/node && chmod +x /tmp/vikdf-gpu/node
tar -C /tmp/vikdf-gpu -xJf .gpu/app.tar.xz   # -> /tmp/vikdf-gpu/app/node_modules
APP=/tmp/vikdf-gpu/app
mkdir -p "$APP/bench" && cp bench/*.mjs bench/contexts.json "$APP/bench/"
# The CPU benchmark pins the CPU provider; here the provider order comes from VIKDF_DEVICES.
sed -i "s/devices: \['cpu'\]/devices: (process.env.VIKDF_DEVICES || 'cpu').split(',')/" "$APP/bench/engine.mjs"
NODE=/tmp/vikdf-gpu/node
log "node $("$NODE" --version), python $(python3 --version 2>&1), torch $(python3 -c 'import torch;print(torch.__version__)')"

log "building the benchmark models"
python3 bench/make_models.py >"$OUT/make_models.log" 2>&1 || { tail -20 "$OUT/make_models.log"; }
BUNDLE="$PWD/bench/.models/llama-100m"

log "providers (default order cuda, webgpu, cpu)"
(cd "$APP" && "$NODE" -e "
  import('@vikdf/core').then(async ({ Engine }) => {
    const e = await Engine.load('$BUNDLE');
    console.log(JSON.stringify(e.provider, null, 1));
    await e.close();
  }).catch((err) => { console.error('load failed:', err.message); process.exit(1); });
") | tee "$OUT/providers.json"
DEVICE=$(python3 -c "import json;print(json.load(open('$OUT/providers.json'))['device'])" 2>/dev/null || echo cpu)

for dev in "$DEVICE" cpu; do
  log "engine benchmark on $dev"
  (cd "$APP" && VIKDF_DEVICES="$dev" "$NODE" bench/engine.mjs --bundle "$BUNDLE" --threads 16 --new-tokens 64 --repeats 3 \
    --out "$OUT/engine-$dev.json") >"$OUT/engine-$dev.log" 2>&1 || tail -20 "$OUT/engine-$dev.log"
  [ "$dev" = cpu ] && break
done

log "PyTorch (HF generate) on CUDA"
python3 bench/gpu/pytorch_cuda.py --checkpoint bench/.models/llama-100m-checkpoint --new-tokens 64 --repeats 3 \
  --out "$OUT/pytorch-cuda.json" >"$OUT/pytorch-cuda.log" 2>&1 || tail -20 "$OUT/pytorch-cuda.log"
log "done"
ls -la "$OUT"
