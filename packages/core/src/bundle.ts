/**
 * The VIKDF model bundle, format version 1: manifest types, `readManifest` and `verifyBundle`.
 * The contract is docs/bundle-format.md; keep this file and that page in step.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';

export const BUNDLE_FORMAT = 'vikdf-bundle';
export const BUNDLE_FORMAT_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';

/** The three graphs of a bundle. */
export const GRAPH_NAMES = ['knowledge_encoder', 'embed_tokens', 'decoder_model_merged'] as const;
export type GraphName = (typeof GRAPH_NAMES)[number];

/** Tokenizers sit at fixed paths; the manifest lists them in `files`. */
export const TOKENIZER_FILES = {
  text: 'text_tokenizer/tokenizer.json',
  llm: 'llm_tokenizer/tokenizer.json',
} as const;

export type Truncation = 'left' | 'right';

/** A tensor as the manifest declares it; a string in `shape` is a dynamic dimension. */
export interface TensorSpec {
  name: string;
  dtype: string;
  shape: (string | number)[];
}

export interface GraphSpec {
  /** Path relative to the bundle directory, with `/`. */
  file: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface ModelInfo {
  text_encoder: 'clip' | 'bert';
  llm_architecture: 'llama' | 'gpt2';
  num_query_tokens: number;
  qformer_hidden_size: number;
  llm_hidden_size: number;
  llm_num_layers: number;
  llm_num_key_value_heads: number;
  llm_head_dim: number;
  llm_vocab_size: number;
  llm_max_position_embeddings: number;
  parameters: Record<string, number>;
}

export interface TokenInfo {
  llm_bos_token_id: number;
  llm_eos_token_id: number;
  llm_pad_token_id: number;
  text_pad_token_id: number;
  /** Generated id -> id, applied before decoding text (keys are decimal strings). */
  replace_generated: Record<string, number>;
}

export interface TextEncoderInput {
  turn_separator: string;
  max_length: number;
  truncation: Truncation;
  add_special_tokens: boolean;
}

export interface PromptInfo {
  chat_template: string;
  knowledge_placeholder: string;
  add_special_tokens: boolean;
  max_length: number;
  truncation: Truncation;
}

export interface GenerationDefaults {
  num_beams: number;
  no_repeat_ngram_size: number;
  max_new_tokens: number;
  do_sample: boolean;
  length_penalty: number;
  early_stopping: boolean;
}

export interface BundleManifest {
  format: typeof BUNDLE_FORMAT;
  format_version: typeof BUNDLE_FORMAT_VERSION;
  name: string;
  created_by: string;
  source: 'export' | 'convert';
  model: ModelInfo;
  tokens: TokenInfo;
  text_encoder_input: TextEncoderInput;
  prompt: PromptInfo;
  generation: GenerationDefaults;
  graphs: Record<GraphName, GraphSpec>;
  /** Optional weight variants: variant name (e.g. `fp16`) -> graph name -> file. */
  variants?: Record<string, Partial<Record<GraphName, string>>>;
  /** Every file of the bundle but manifest.json -> lowercase hex sha256. */
  files: Record<string, string>;
}

export type BundleErrorCode =
  /** manifest.json is not valid JSON, lacks a required key, or has a value of the wrong type. */
  | 'bad_manifest'
  /** `format_version` is a version this runtime does not know. */
  | 'unsupported_version'
  /** A file (manifest.json, or one listed in `files`) does not exist. */
  | 'missing_file'
  /** A file's sha256 differs from the one in `files`. */
  | 'checksum_mismatch'
  /** A graph file, variant file or tokenizer is not listed in `files`. */
  | 'unlisted_file'
  /** ONNX Runtime cannot load a graph file (corrupt or not ONNX). */
  | 'corrupt_graph'
  /** A graph's inputs or outputs differ from the manifest's declaration. */
  | 'graph_mismatch'
  /** A tokenizer file cannot be read or parsed. */
  | 'bad_tokenizer';

export class BundleError extends Error {
  override name = 'BundleError';
  readonly code: BundleErrorCode;
  /** Path of the file concerned (the manifest for manifest errors). */
  readonly file: string;
  /** Dotted manifest key concerned, for manifest errors. */
  readonly key: string | undefined;

  constructor(code: BundleErrorCode, message: string, options: { file: string; key?: string; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.file = options.file;
    this.key = options.key;
  }
}

// ---------------------------------------------------------------------------------------------
// Manifest parsing

type Json = Record<string, unknown>;

/** Checks a parsed manifest; `file` is only used in error messages. */
export function parseManifest(data: unknown, file: string = MANIFEST_FILE): BundleManifest {
  const v = new ManifestValidator(file);
  const root = v.object(data, '');

  const format = v.field(root, 'format', '');
  if (format !== BUNDLE_FORMAT) {
    throw v.error(`"format" must be ${JSON.stringify(BUNDLE_FORMAT)}, got ${show(format)}`, 'format');
  }
  const version = v.field(root, 'format_version', '');
  if (typeof version !== 'number' || !Number.isInteger(version)) {
    throw v.error(`"format_version" must be an integer, got ${show(version)}`, 'format_version');
  }
  if (version !== BUNDLE_FORMAT_VERSION) {
    throw new BundleError(
      'unsupported_version',
      `${file}: unsupported "format_version" ${version}; this runtime reads version ${BUNDLE_FORMAT_VERSION}`,
      { file, key: 'format_version' },
    );
  }

  v.string(root, 'name', '');
  v.string(root, 'created_by', '');
  v.oneOf(root, 'source', '', ['export', 'convert']);

  const model = v.object(v.field(root, 'model', ''), 'model');
  v.oneOf(model, 'text_encoder', 'model', ['clip', 'bert']);
  v.oneOf(model, 'llm_architecture', 'model', ['llama', 'gpt2']);
  for (const key of [
    'num_query_tokens',
    'qformer_hidden_size',
    'llm_hidden_size',
    'llm_num_layers',
    'llm_num_key_value_heads',
    'llm_head_dim',
    'llm_vocab_size',
    'llm_max_position_embeddings',
  ]) {
    v.integer(model, key, 'model', 1);
  }
  const parameters = v.object(v.field(model, 'parameters', 'model'), 'model.parameters');
  for (const key of Object.keys(parameters)) v.integer(parameters, key, 'model.parameters', 0);

  const tokens = v.object(v.field(root, 'tokens', ''), 'tokens');
  for (const key of ['llm_bos_token_id', 'llm_eos_token_id', 'llm_pad_token_id', 'text_pad_token_id']) {
    v.integer(tokens, key, 'tokens', 0);
  }
  const replace = v.object(v.field(tokens, 'replace_generated', 'tokens'), 'tokens.replace_generated');
  for (const key of Object.keys(replace)) {
    if (!/^(0|[1-9]\d*)$/.test(key)) {
      throw v.error(`key ${show(key)} of "tokens.replace_generated" must be a token id`, `tokens.replace_generated.${key}`);
    }
    v.integer(replace, key, 'tokens.replace_generated', 0);
  }

  const tei = v.object(v.field(root, 'text_encoder_input', ''), 'text_encoder_input');
  v.string(tei, 'turn_separator', 'text_encoder_input', true);
  v.integer(tei, 'max_length', 'text_encoder_input', 1);
  v.oneOf(tei, 'truncation', 'text_encoder_input', ['left', 'right']);
  v.boolean(tei, 'add_special_tokens', 'text_encoder_input');

  const prompt = v.object(v.field(root, 'prompt', ''), 'prompt');
  v.string(prompt, 'chat_template', 'prompt');
  const placeholder = v.string(prompt, 'knowledge_placeholder', 'prompt');
  v.boolean(prompt, 'add_special_tokens', 'prompt');
  v.integer(prompt, 'max_length', 'prompt', 1);
  v.oneOf(prompt, 'truncation', 'prompt', ['left', 'right']);
  if (!(prompt.chat_template as string).includes(placeholder)) {
    throw v.error(`"prompt.chat_template" does not contain the knowledge placeholder ${show(placeholder)}`, 'prompt.chat_template');
  }

  const gen = v.object(v.field(root, 'generation', ''), 'generation');
  v.integer(gen, 'num_beams', 'generation', 1);
  v.integer(gen, 'no_repeat_ngram_size', 'generation', 0);
  v.integer(gen, 'max_new_tokens', 'generation', 1);
  v.boolean(gen, 'do_sample', 'generation');
  v.number(gen, 'length_penalty', 'generation');
  v.boolean(gen, 'early_stopping', 'generation');

  const graphs = v.object(v.field(root, 'graphs', ''), 'graphs');
  for (const name of GRAPH_NAMES) {
    const at = `graphs.${name}`;
    const graph = v.object(v.field(graphs, name, 'graphs'), at);
    v.path(graph, 'file', at);
    for (const side of ['inputs', 'outputs'] as const) {
      const list = v.field(graph, side, at);
      if (!Array.isArray(list) || list.length === 0) {
        throw v.error(`"${at}.${side}" must be a non-empty list of tensors`, `${at}.${side}`);
      }
      list.forEach((item, i) => {
        const tat = `${at}.${side}[${i}]`;
        const tensor = v.object(item, tat);
        v.string(tensor, 'name', tat);
        v.string(tensor, 'dtype', tat);
        const shape = v.field(tensor, 'shape', tat);
        const dimOk = (d: unknown) => (typeof d === 'string' && d !== '') || (Number.isInteger(d) && (d as number) >= 0);
        if (!Array.isArray(shape) || !shape.every(dimOk)) {
          throw v.error(`"${tat}.shape" must be a list of dimension names or sizes, got ${show(shape)}`, `${tat}.shape`);
        }
      });
    }
  }

  if (root.variants !== undefined) {
    const variants = v.object(root.variants, 'variants');
    for (const [variant, entry] of Object.entries(variants)) {
      const at = `variants.${variant}`;
      const map = v.object(entry, at);
      for (const graphName of Object.keys(map)) {
        if (!(GRAPH_NAMES as readonly string[]).includes(graphName)) {
          throw v.error(`"${at}" names an unknown graph ${show(graphName)} (known: ${GRAPH_NAMES.join(', ')})`, `${at}.${graphName}`);
        }
        v.path(map, graphName, at);
      }
    }
  }

  const files = v.object(v.field(root, 'files', ''), 'files');
  for (const [name, digest] of Object.entries(files)) {
    v.checkPath(name, `files[${show(name)}]`);
    if (name === MANIFEST_FILE) {
      throw v.error(`"files" must not list ${MANIFEST_FILE} itself`, `files.${name}`);
    }
    if (typeof digest !== 'string' || !/^[0-9a-f]{64}$/.test(digest)) {
      throw v.error(`"files" entry ${show(name)} must be a lowercase hex sha256, got ${show(digest)}`, `files.${name}`);
    }
  }

  return root as unknown as BundleManifest;
}

/** Reads and checks `<dir>/manifest.json`. */
export async function readManifest(dir: string): Promise<BundleManifest> {
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if (isNotFound(error)) {
      throw new BundleError('missing_file', `${file}: bundle manifest not found`, { file, cause: error });
    }
    throw error;
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new BundleError('bad_manifest', `${file}: not valid JSON (${(error as Error).message})`, { file, cause: error });
  }
  return parseManifest(data, file);
}

// ---------------------------------------------------------------------------------------------
// Bundle verification

/** Every file the manifest refers to by name: the three graphs, the variants and the tokenizers. */
export function referencedFiles(manifest: BundleManifest): { file: string; key: string }[] {
  const refs: { file: string; key: string }[] = [
    { file: TOKENIZER_FILES.text, key: 'text tokenizer' },
    { file: TOKENIZER_FILES.llm, key: 'LLM tokenizer' },
  ];
  for (const name of GRAPH_NAMES) refs.push({ file: manifest.graphs[name].file, key: `graphs.${name}.file` });
  for (const [variant, map] of Object.entries(manifest.variants ?? {})) {
    for (const [graphName, file] of Object.entries(map)) {
      if (file !== undefined) refs.push({ file, key: `variants.${variant}.${graphName}` });
    }
  }
  return refs;
}

/** Lowercase hex sha256 of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

/**
 * Reads the manifest of the bundle in `dir`, checks that every file the manifest names is listed in
 * `files`, and that every listed file exists and has the listed sha256 (files are checked in the order of
 * `files`; the first failure is thrown). Returns the manifest.
 */
export async function verifyBundle(dir: string): Promise<BundleManifest> {
  const manifest = await readManifest(dir);
  const manifestFile = path.join(dir, MANIFEST_FILE);

  for (const { file, key } of referencedFiles(manifest)) {
    if (!Object.hasOwn(manifest.files, file)) {
      throw new BundleError(
        'unlisted_file',
        `${manifestFile}: ${file} (${key}) is not listed in "files", so its checksum cannot be verified`,
        { file: path.join(dir, file), key },
      );
    }
  }

  for (const [name, expected] of Object.entries(manifest.files)) {
    const file = path.join(dir, ...name.split('/'));
    let isFile = false;
    try {
      isFile = (await stat(file)).isFile();
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    if (!isFile) {
      throw new BundleError('missing_file', `${file}: listed in the bundle manifest but missing`, { file });
    }
    const actual = await sha256File(file);
    if (actual !== expected) {
      throw new BundleError(
        'checksum_mismatch',
        `${file}: sha256 mismatch (manifest ${expected}, file ${actual})`,
        { file },
      );
    }
  }
  return manifest;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function isNotFound(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

class ManifestValidator {
  constructor(readonly file: string) {}

  error(message: string, key: string): BundleError {
    return new BundleError('bad_manifest', `${this.file}: ${message}`, { file: this.file, key });
  }

  object(value: unknown, at: string): Json {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw this.error(`${at ? `"${at}"` : 'the manifest'} must be a JSON object, got ${show(value)}`, at);
    }
    return value as Json;
  }

  field(obj: Json, key: string, at: string): unknown {
    const full = at ? `${at}.${key}` : key;
    if (!Object.hasOwn(obj, key) || obj[key] === undefined || obj[key] === null) {
      throw this.error(`missing required key "${full}"`, full);
    }
    return obj[key];
  }

  string(obj: Json, key: string, at: string, allowEmpty = false): string {
    const value = this.field(obj, key, at);
    if (typeof value !== 'string' || (!allowEmpty && value === '')) {
      throw this.error(`"${join(at, key)}" must be a ${allowEmpty ? '' : 'non-empty '}string, got ${show(value)}`, join(at, key));
    }
    return value;
  }

  number(obj: Json, key: string, at: string): number {
    const value = this.field(obj, key, at);
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw this.error(`"${join(at, key)}" must be a number, got ${show(value)}`, join(at, key));
    }
    return value;
  }

  integer(obj: Json, key: string, at: string, min: number): number {
    const value = this.field(obj, key, at);
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
      throw this.error(`"${join(at, key)}" must be an integer >= ${min}, got ${show(value)}`, join(at, key));
    }
    return value;
  }

  boolean(obj: Json, key: string, at: string): boolean {
    const value = this.field(obj, key, at);
    if (typeof value !== 'boolean') {
      throw this.error(`"${join(at, key)}" must be true or false, got ${show(value)}`, join(at, key));
    }
    return value;
  }

  oneOf<T extends string>(obj: Json, key: string, at: string, allowed: readonly T[]): T {
    const value = this.field(obj, key, at);
    if (!allowed.includes(value as T)) {
      throw this.error(`"${join(at, key)}" must be one of ${allowed.map((a) => show(a)).join(', ')}, got ${show(value)}`, join(at, key));
    }
    return value as T;
  }

  path(obj: Json, key: string, at: string): string {
    const value = this.string(obj, key, at);
    this.checkPath(value, join(at, key));
    return value;
  }

  /** Bundle paths are relative, use `/`, and stay inside the bundle. */
  checkPath(value: string, key: string): void {
    const parts = value.split('/');
    if (
      value === '' ||
      value.includes('\\') ||
      value.startsWith('/') ||
      /^[A-Za-z]:/.test(value) ||
      parts.some((p) => p === '' || p === '.' || p === '..')
    ) {
      throw this.error(`"${key}" must be a relative path inside the bundle using "/", got ${show(value)}`, key);
    }
  }
}

function join(at: string, key: string): string {
  return at ? `${at}.${key}` : key;
}
