/**
 * ONNX Runtime sessions of a bundle: execution-provider choice, graph checks against the manifest, and the
 * three graph calls (knowledge encoder, token embeddings, decoder step with a KV cache).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { BundleError, type BundleManifest, type GraphName, type TensorSpec } from './bundle.js';
import { KvCache, type KvShape } from './kv-cache.js';

export type Device = 'cuda' | 'webgpu' | 'cpu';
export const DEFAULT_DEVICES: Device[] = ['cuda', 'webgpu', 'cpu'];

export interface ProviderReport {
  /** The execution provider that runs the graphs. */
  device: Device;
  /** Providers tried before it, each with why it was skipped. */
  skipped: { device: Device; reason: string }[];
}

export interface RuntimeOptions {
  /** Providers to try, in order (default cuda, webgpu, cpu). */
  devices?: Device[];
  /** A weight variant named in the manifest (`fp16`, `int8`); default the float32 graphs. */
  variant?: string;
  /** Threads for the CPU provider (default: ONNX Runtime's choice). */
  intraOpNumThreads?: number;
  /**
   * How int8-weight MatMuls compute (bundles with `weights: int8` graphs; float graphs are unaffected).
   * `'fast'` (default): ONNX Runtime may quantise their activations to int8 (MatMulNBits accuracy level 4),
   * about 6x faster on model-mini, but results then move by ~1e-2 and differ between CPU families (AVX2,
   * AVX-512 VNNI). `'exact'`: float activations, as the bundle specifies: the same results on every CPU within
   * float rounding (~4e-6), what the golden tests check (docs/reliability.md).
   */
  precision?: Precision;
}

export type Precision = 'fast' | 'exact';

const HOW_TO_GET_CUDA =
  "let onnxruntime-node's install script fetch them (pnpm rebuild onnxruntime-node with its build allowed, " +
  'or npm rebuild onnxruntime-node, with network access) on Linux x64 with an NVIDIA driver and CUDA 12; see docs/core.md';

/**
 * Where onnxruntime-node keeps its native libraries; its CUDA provider library sits there once its install
 * script has fetched it. Checking the file first avoids ONNX Runtime's loader error on every start.
 */
function cudaProviderPresent(): boolean {
  try {
    const entry = createRequire(import.meta.url).resolve('onnxruntime-node');
    let dir = path.dirname(entry);
    while (!existsSync(path.join(dir, 'bin')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    const lib = process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
    return existsSync(path.join(dir, 'bin', 'napi-v6', process.platform, process.arch, lib));
  } catch {
    return false;
  }
}

/** The Vulkan loader that WebGPU (Dawn) opens on Linux; without it ONNX Runtime prints a warning and fails. */
export const VULKAN_LOADER = 'libvulkan.so.1';

/** Where the dynamic linker looks for libraries on Linux, besides LD_LIBRARY_PATH and /etc/ld.so.conf.d. */
const STANDARD_LIBRARY_DIRS = [
  '/lib', '/usr/lib', '/lib64', '/usr/lib64', '/usr/local/lib',
  '/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib/aarch64-linux-gnu', '/usr/lib/aarch64-linux-gnu',
  '/usr/lib/wsl/lib', // WSL's GPU libraries
];

/** Directories listed in /etc/ld.so.conf.d/*.conf (one per line; `include` lines and comments ignored). */
function ldSoConfDirs(confDir = '/etc/ld.so.conf.d'): string[] {
  const dirs: string[] = [];
  let names: string[];
  try {
    names = readdirSync(confDir).filter((n) => n.endsWith('.conf'));
  } catch {
    return dirs;
  }
  for (const name of names) {
    try {
      for (const line of readFileSync(path.join(confDir, name), 'utf8').split('\n')) {
        const dir = line.replace(/#.*/, '').trim();
        if (dir.startsWith('/')) dirs.push(dir);
      }
    } catch {
      // an unreadable file adds no directory
    }
  }
  return dirs;
}

export interface VulkanLoaderSearch {
  /** The loader's path, when one was found. */
  found?: string;
  /** The directories looked in, in order. */
  searched: string[];
}

/**
 * Looks for the Vulkan loader where the dynamic linker would: LD_LIBRARY_PATH, the directories of
 * /etc/ld.so.conf.d, and the standard ones. A file check, so that a machine without one gets a reason instead
 * of ONNX Runtime's "Couldn't load Vulkan" warning on stderr.
 */
export function findVulkanLoader({ env = process.env, dirs }: { env?: NodeJS.ProcessEnv; dirs?: string[] } = {}): VulkanLoaderSearch {
  const searched = [
    ...new Set([...(env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d.startsWith('/')), ...(dirs ?? [...ldSoConfDirs(), ...STANDARD_LIBRARY_DIRS])]),
  ];
  const found = searched.map((d) => path.join(d, VULKAN_LOADER)).find((f) => existsSync(f));
  return found === undefined ? { searched } : { found, searched };
}

/** Whether VIKDF_DEBUG asks for the provider probe's details on stderr. */
function debugging(): boolean {
  const v = process.env.VIKDF_DEBUG;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

function debug(message: string): void {
  if (debugging()) process.stderr.write(`[vikdf debug] ${message}\n`);
}

/**
 * One line on what runs a model: `tiny-random on cpu`, or with providers skipped before it
 * `tiny-random on cpu (no GPU: cuda: CUDA provider libraries are not installed; webgpu: no Vulkan loader ...)`
 * (each reason up to its first ": ", the rest is in `provider.skipped` and under VIKDF_DEBUG).
 */
export function describeProvider(name: string, provider: ProviderReport): string {
  if (provider.skipped.length === 0) return `${name} on ${provider.device}`;
  const reasons = provider.skipped.map((s) => `${s.device}: ${shortReason(s.reason)}`).join('; ');
  return `${name} on ${provider.device} (${provider.device === 'cpu' ? 'no GPU' : 'skipped'}: ${reasons})`;
}

function shortReason(reason: string): string {
  const first = reason.split('\n')[0]!;
  const cut = first.indexOf(': ');
  const short = cut > 0 ? first.slice(0, cut) : first;
  return short.length > 120 ? `${short.slice(0, 117)}...` : short;
}

function sameShape(spec: TensorSpec, meta: ort.InferenceSession.ValueMetadata): boolean {
  if (!meta.isTensor) return false;
  const dims = meta.shape;
  if (dims.length !== spec.shape.length) return false;
  return spec.shape.every((d, i) => (typeof d === 'number' ? dims[i] === d : typeof dims[i] === 'string'));
}

/** Refuses a graph whose inputs or outputs differ from what the manifest declares. */
export function checkGraph(name: GraphName, file: string, session: ort.InferenceSession, spec: { inputs: TensorSpec[]; outputs: TensorSpec[] }): void {
  const check = (kind: 'input' | 'output', want: TensorSpec[], names: readonly string[], meta: readonly ort.InferenceSession.ValueMetadata[]) => {
    const got = names.join(', ');
    const expected = want.map((t) => t.name).join(', ');
    if (got !== expected) {
      throw new BundleError('graph_mismatch', `${file}: ${name} ${kind}s are [${got}], the manifest declares [${expected}]`, { file });
    }
    want.forEach((t, i) => {
      const m = meta[i]!;
      const type = m.isTensor ? m.type : 'non-tensor';
      if (type !== t.dtype || !sameShape(t, m)) {
        const shape = m.isTensor ? JSON.stringify(m.shape) : '?';
        throw new BundleError('graph_mismatch', `${file}: ${kind} ${t.name} is ${type}${shape}, the manifest declares ${t.dtype}${JSON.stringify(t.shape)}`, { file });
      }
    });
  };
  check('input', spec.inputs, session.inputNames, session.inputMetadata);
  check('output', spec.outputs, session.outputNames, session.outputMetadata);
}

export class BundleRuntime {
  private constructor(
    readonly manifest: BundleManifest,
    readonly provider: ProviderReport,
    private readonly sessions: Record<GraphName, ort.InferenceSession>,
  ) {}

  get kvShape(): KvShape {
    const m = this.manifest.model;
    return { layers: m.llm_num_layers, heads: m.llm_num_key_value_heads, headDim: m.llm_head_dim };
  }

  static async create(dir: string, manifest: BundleManifest, options: RuntimeOptions = {}): Promise<BundleRuntime> {
    if (options.precision !== undefined && options.precision !== 'fast' && options.precision !== 'exact') {
      throw new TypeError(`precision must be 'fast' or 'exact', not ${JSON.stringify(options.precision)}`);
    }
    const files: Record<GraphName, string> = {
      knowledge_encoder: manifest.graphs.knowledge_encoder.file,
      embed_tokens: manifest.graphs.embed_tokens.file,
      decoder_model_merged: manifest.graphs.decoder_model_merged.file,
    };
    if (options.variant) {
      const variant = manifest.variants?.[options.variant];
      if (!variant) {
        const known = Object.keys(manifest.variants ?? {}).join(', ') || 'none';
        throw new BundleError('bad_manifest', `${dir}: no weight variant "${options.variant}" (the bundle has: ${known})`, { file: 'manifest.json', key: 'variants' });
      }
      Object.assign(files, variant);
    }
    const skipped: ProviderReport['skipped'] = [];
    for (const device of options.devices ?? DEFAULT_DEVICES) {
      if (device === 'cuda' && !cudaProviderPresent()) {
        skipped.push({ device, reason: `CUDA provider libraries are not installed: ${HOW_TO_GET_CUDA}` });
        debug(`cuda: skipped, ${skipped.at(-1)!.reason}`);
        continue;
      }
      if (device === 'webgpu' && process.platform === 'linux') {
        // Without a Vulkan loader ONNX Runtime's WebGPU (Dawn) prints a warning with a native stack and fails:
        // find that out from the file system instead.
        const vulkan = findVulkanLoader();
        if (vulkan.found === undefined) {
          const reason = `no Vulkan loader (${VULKAN_LOADER}) in the library directories: WebGPU needs one and a GPU driver on Linux`;
          skipped.push({ device, reason });
          debug(`webgpu: skipped without calling ONNX Runtime, ${VULKAN_LOADER} is in none of: ${vulkan.searched.join(', ')}`);
          continue;
        }
        debug(`webgpu: Vulkan loader ${vulkan.found}; creating sessions (ONNX Runtime may print its own messages)`);
      }
      debug(`${device}: creating sessions of ${Object.values(files).join(', ')}`);
      const sessions: Partial<Record<GraphName, ort.InferenceSession>> = {};
      let failure: string | undefined;
      for (const graph of Object.keys(files) as GraphName[]) {
        // The two small graphs run briefly once per step: their idle threads must not spin and steal the
        // cores from the decoder (measured in docs/benchmarks.md: tiny model 996 -> 1583 tokens/s).
        const created = await tryCreate(path.join(dir, files[graph]), device, options, graph !== 'decoder_model_merged');
        if (created instanceof Error) {
          if (device === 'cpu') {
            await releaseAll(sessions);
            throw new BundleError('corrupt_graph', `${files[graph]}: ONNX Runtime cannot load it: ${created.message}`, { file: files[graph] });
          }
          failure = `${firstLine(created.message)}${device === 'webgpu' ? ' (WebGPU needs a Vulkan loader and a GPU driver on Linux)' : ''}`;
          break;
        }
        sessions[graph] = created;
      }
      if (failure !== undefined) {
        await releaseAll(sessions);
        skipped.push({ device, reason: failure });
        debug(`${device}: skipped, ${failure}`);
        continue;
      }
      const all = sessions as Record<GraphName, ort.InferenceSession>;
      try {
        for (const graph of Object.keys(files) as GraphName[]) checkGraph(graph, files[graph], all[graph], manifest.graphs[graph]);
      } catch (err) {
        await releaseAll(all);
        throw err;
      }
      debug(`${device}: runs the bundle`);
      return new BundleRuntime(manifest, { device, skipped }, all);
    }
    throw new Error(`no execution provider could run the bundle: ${skipped.map((s) => `${s.device}: ${s.reason}`).join('; ')}`);
  }

  async release(): Promise<void> {
    await releaseAll(this.sessions);
  }

  /** Knowledge vectors already projected to the LLM size, one Float32Array (n_q x hidden) per row. */
  async encodeKnowledge(rows: number[][]): Promise<Float32Array[]> {
    const width = Math.max(...rows.map((r) => r.length));
    const pad = BigInt(this.manifest.tokens.text_pad_token_id);
    const ids = new BigInt64Array(rows.length * width).fill(pad);
    const mask = new BigInt64Array(rows.length * width);
    rows.forEach((r, i) => {
      r.forEach((t, j) => {
        ids[i * width + j] = BigInt(t);
        mask[i * width + j] = 1n;
      });
    });
    const out = await this.sessions.knowledge_encoder.run({
      input_ids: new ort.Tensor('int64', ids, [rows.length, width]),
      attention_mask: new ort.Tensor('int64', mask, [rows.length, width]),
    });
    const data = out.knowledge_embeds!.data as Float32Array;
    const size = data.length / rows.length;
    return rows.map((_, i) => data.slice(i * size, (i + 1) * size));
  }

  /** Input embeddings of token ids: ids.length x hidden. */
  async embed(ids: number[]): Promise<Float32Array> {
    if (ids.length === 0) return new Float32Array(0);
    const out = await this.sessions.embed_tokens.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (v) => BigInt(v)), [1, ids.length]),
    });
    return out.inputs_embeds!.data as Float32Array;
  }

  /**
   * One decoder call. `embeds` is rows x steps x hidden for the new positions, all real (no padding inside
   * a row's new positions, except where `newMask` says so for prefill batches); returns the logits of the last
   * new position of each row and the cache extended by the new positions.
   */
  async decode(embeds: Float32Array, steps: number, past: KvCache, newMask?: Uint8Array): Promise<{ logits: Float32Array[]; cache: KvCache }> {
    const rows = past.rows;
    const hidden = this.manifest.model.llm_hidden_size;
    if (embeds.length !== rows * steps * hidden) throw new Error(`decode: embeddings for ${rows} rows x ${steps} steps expected`);
    const total = past.length + steps;
    const mask = new Uint8Array(rows * total);
    const mask64 = new BigInt64Array(rows * total);
    const positions = new BigInt64Array(rows * steps);
    for (let r = 0; r < rows; r++) {
      let count = 0;
      for (let j = 0; j < total; j++) {
        const m = j < past.length ? past.mask[r * past.length + j]! : (newMask ? newMask[r * steps + (j - past.length)]! : 1);
        mask[r * total + j] = m;
        mask64[r * total + j] = BigInt(m);
        count += m;
        // Hugging Face's rule: cumsum(mask) - 1, and 1 where the mask is 0.
        if (j >= past.length) positions[r * steps + (j - past.length)] = BigInt(m ? count - 1 : 1);
      }
    }
    const { layers, heads, headDim } = past.shape;
    const feeds: Record<string, ort.Tensor> = {
      inputs_embeds: new ort.Tensor('float32', embeds, [rows, steps, hidden]),
      attention_mask: new ort.Tensor('int64', mask64, [rows, total]),
      position_ids: new ort.Tensor('int64', positions, [rows, steps]),
    };
    for (let i = 0; i < layers; i++) {
      feeds[`past_key_values.${i}.key`] = new ort.Tensor('float32', past.tensors[2 * i]!, [rows, heads, past.length, headDim]);
      feeds[`past_key_values.${i}.value`] = new ort.Tensor('float32', past.tensors[2 * i + 1]!, [rows, heads, past.length, headDim]);
    }
    const out = await this.sessions.decoder_model_merged.run(feeds);
    const logitsAll = out.logits!.data as Float32Array;
    const vocab = this.manifest.model.llm_vocab_size;
    const logits = Array.from({ length: rows }, (_, r) => logitsAll.slice(((r + 1) * steps - 1) * vocab, (r + 1) * steps * vocab));
    const tensors: Float32Array[] = [];
    for (let i = 0; i < layers; i++) {
      tensors.push(out[`present.${i}.key`]!.data as Float32Array, out[`present.${i}.value`]!.data as Float32Array);
    }
    return { logits, cache: new KvCache(past.shape, rows, total, tensors, mask) };
  }
}

async function tryCreate(file: string, device: Device, options: RuntimeOptions, noSpinning = false): Promise<ort.InferenceSession | Error> {
  try {
    return await ort.InferenceSession.create(file, {
      executionProviders: [device],
      graphOptimizationLevel: 'all',
      ...(options.intraOpNumThreads ? { intraOpNumThreads: options.intraOpNumThreads } : {}),
      extra: {
        session: {
          // Int8-weight graphs (DequantizeLinear -> MatMul) are fused into MatMulNBits: accuracy level 4 quantises
          // the activations to int8 with CPU-specific kernels (fast; outputs move by ~1e-2 and differ between
          // AVX2 and AVX-512 machines), level 0 keeps float activations (exact; measured in docs/reliability.md).
          qdq_matmulnbits_accuracy_level: options.precision === 'exact' ? '0' : '4',
          ...(noSpinning ? { intra_op: { allow_spinning: '0' } } : {}),
        },
      },
    });
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

async function releaseAll(sessions: Partial<Record<GraphName, ort.InferenceSession>>): Promise<void> {
  await Promise.all(Object.values(sessions).map((s) => s?.release()));
}

function firstLine(text: string): string {
  return text.split('\n')[0]!.slice(0, 300);
}
