import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BundleError, type BundleErrorCode, readManifest, sha256File, verifyBundle } from '../src/index.js';

type Manifest = Record<string, any>;

const tensor = (name: string, dtype: string, shape: (string | number)[]) => ({ name, dtype, shape });

/** Writes a small, valid bundle (fake graph bytes, real sha256s) and returns its manifest. */
async function writeBundle(dir: string, opts: { bigFile?: boolean } = {}): Promise<Manifest> {
  const contents: Record<string, Buffer> = {
    'text_tokenizer/tokenizer.json': Buffer.from(JSON.stringify({ version: '1.0', model: { type: 'WordLevel' } })),
    'llm_tokenizer/tokenizer.json': Buffer.from(JSON.stringify({ version: '1.0', model: { type: 'BPE' } })),
    'onnx/knowledge_encoder.onnx': Buffer.from('not really onnx: knowledge encoder'),
    'onnx/embed_tokens.onnx': Buffer.from('not really onnx: embed tokens'),
    'onnx/decoder_model_merged.onnx': opts.bigFile
      ? Buffer.alloc(5 * 1024 * 1024 + 123, 7) // several stream chunks
      : Buffer.from('not really onnx: decoder'),
    'onnx/decoder_model_merged_int8.onnx': Buffer.from('not really onnx: int8 decoder'),
  };
  const files: Record<string, string> = {};
  for (const [name, bytes] of Object.entries(contents)) {
    const file = path.join(dir, name);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, bytes);
    files[name] = createHash('sha256').update(bytes).digest('hex');
  }
  const manifest: Manifest = {
    format: 'vikdf-bundle',
    format_version: 1,
    name: 'tiny-random',
    created_by: 'vikdf-training 0.1.0',
    source: 'export',
    model: {
      text_encoder: 'bert',
      llm_architecture: 'gpt2',
      num_query_tokens: 4,
      qformer_hidden_size: 16,
      llm_hidden_size: 32,
      llm_num_layers: 2,
      llm_num_key_value_heads: 2,
      llm_head_dim: 16,
      llm_vocab_size: 100,
      llm_max_position_embeddings: 64,
      parameters: { text_encoder: 1000, iq_former: 2000, llm: 3000 },
    },
    tokens: { llm_bos_token_id: 1, llm_eos_token_id: 2, llm_pad_token_id: 2, text_pad_token_id: 0, replace_generated: { '0': 2 } },
    text_encoder_input: { turn_separator: '[SEP]', max_length: 77, truncation: 'right', add_special_tokens: true },
    prompt: {
      chat_template: '[INST]<|knowledge|>{% for m in messages %}{{ m.content }}{% endfor %}',
      knowledge_placeholder: '<|knowledge|>',
      add_special_tokens: true,
      max_length: 128,
      truncation: 'right',
    },
    generation: { num_beams: 3, no_repeat_ngram_size: 3, max_new_tokens: 32, do_sample: false, length_penalty: 1.0, early_stopping: false },
    graphs: {
      knowledge_encoder: {
        file: 'onnx/knowledge_encoder.onnx',
        inputs: [tensor('input_ids', 'int64', ['batch', 'text_sequence']), tensor('attention_mask', 'int64', ['batch', 'text_sequence'])],
        outputs: [tensor('knowledge_vectors', 'float32', ['batch', 4, 16]), tensor('knowledge_embeds', 'float32', ['batch', 4, 32])],
      },
      embed_tokens: {
        file: 'onnx/embed_tokens.onnx',
        inputs: [tensor('input_ids', 'int64', ['batch', 'sequence'])],
        outputs: [tensor('inputs_embeds', 'float32', ['batch', 'sequence', 32])],
      },
      decoder_model_merged: {
        file: 'onnx/decoder_model_merged.onnx',
        inputs: [tensor('inputs_embeds', 'float32', ['batch', 'sequence', 32])],
        outputs: [tensor('logits', 'float32', ['batch', 'sequence', 100])],
      },
    },
    variants: { int8: { decoder_model_merged: 'onnx/decoder_model_merged_int8.onnx' } },
    files,
    some_future_key: 'ignored',
  };
  await writeManifest(dir, manifest);
  return manifest;
}

const writeManifest = (dir: string, manifest: Manifest) =>
  writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));

/** Runs `fn`, expects a BundleError with `code`, and returns it. */
async function expectBundleError(fn: () => Promise<unknown>, code: BundleErrorCode): Promise<BundleError> {
  let caught: unknown;
  try {
    await fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected a BundleError with code ${code}`).toBeInstanceOf(BundleError);
  const error = caught as BundleError;
  expect(error.code).toBe(code);
  return error;
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vikdf-bundle-test-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('verifyBundle', () => {
  it('accepts a good bundle and returns its manifest', async () => {
    await writeBundle(dir);
    const manifest = await verifyBundle(dir);
    expect(manifest.name).toBe('tiny-random');
    expect(manifest.graphs.decoder_model_merged.file).toBe('onnx/decoder_model_merged.onnx');
    expect(manifest.variants?.int8?.decoder_model_merged).toBe('onnx/decoder_model_merged_int8.onnx');
    expect(Object.keys(manifest.files)).toHaveLength(6);
  });

  it('accepts a bundle without variants', async () => {
    const manifest = await writeBundle(dir);
    delete manifest.variants;
    await writeManifest(dir, manifest);
    await expect(verifyBundle(dir)).resolves.toMatchObject({ name: 'tiny-random' });
  });

  it('fails with missing_file naming the file when a listed file is gone', async () => {
    await writeBundle(dir);
    await unlink(path.join(dir, 'onnx', 'embed_tokens.onnx'));
    const error = await expectBundleError(() => verifyBundle(dir), 'missing_file');
    expect(error.message).toContain(path.join('onnx', 'embed_tokens.onnx'));
    expect(error.file).toBe(path.join(dir, 'onnx', 'embed_tokens.onnx'));
  });

  it('fails with missing_file when manifest.json is absent', async () => {
    const error = await expectBundleError(() => verifyBundle(dir), 'missing_file');
    expect(error.message).toContain('manifest.json');
  });

  it('fails with checksum_mismatch naming the file when one byte changed', async () => {
    await writeBundle(dir);
    const file = path.join(dir, 'llm_tokenizer', 'tokenizer.json');
    const bytes = await readFile(file);
    bytes[5] = bytes[5]! ^ 1;
    await writeFile(file, bytes);
    const error = await expectBundleError(() => verifyBundle(dir), 'checksum_mismatch');
    expect(error.message).toContain(path.join('llm_tokenizer', 'tokenizer.json'));
    expect(error.file).toBe(file);
  });

  it('streams big files: a good one verifies, a changed last byte is caught', async () => {
    const manifest = await writeBundle(dir, { bigFile: true });
    const file = path.join(dir, 'onnx', 'decoder_model_merged.onnx');
    expect(await sha256File(file)).toBe(manifest.files['onnx/decoder_model_merged.onnx']);
    await verifyBundle(dir);
    const bytes = await readFile(file);
    bytes[bytes.length - 1] = 8;
    await writeFile(file, bytes);
    const error = await expectBundleError(() => verifyBundle(dir), 'checksum_mismatch');
    expect(error.message).toContain('decoder_model_merged.onnx');
  });

  it('fails with unlisted_file when a graph file is not listed in files', async () => {
    const manifest = await writeBundle(dir);
    delete manifest.files['onnx/knowledge_encoder.onnx'];
    await writeManifest(dir, manifest);
    const error = await expectBundleError(() => verifyBundle(dir), 'unlisted_file');
    expect(error.message).toContain('onnx/knowledge_encoder.onnx');
    expect(error.key).toBe('graphs.knowledge_encoder.file');
  });

  it('fails with unlisted_file when a variant file or a tokenizer is not listed in files', async () => {
    const manifest = await writeBundle(dir);
    manifest.variants.fp16 = { embed_tokens: 'onnx/embed_tokens_fp16.onnx' };
    await writeManifest(dir, manifest);
    let error = await expectBundleError(() => verifyBundle(dir), 'unlisted_file');
    expect(error.message).toContain('onnx/embed_tokens_fp16.onnx');

    delete manifest.variants.fp16;
    delete manifest.files['text_tokenizer/tokenizer.json'];
    await writeManifest(dir, manifest);
    error = await expectBundleError(() => verifyBundle(dir), 'unlisted_file');
    expect(error.message).toContain('text_tokenizer/tokenizer.json');
  });
});

describe('readManifest', () => {
  it('reads a good manifest', async () => {
    await writeBundle(dir);
    const manifest = await readManifest(dir);
    expect(manifest.format).toBe('vikdf-bundle');
    expect(manifest.format_version).toBe(1);
    expect(manifest.tokens.replace_generated).toEqual({ '0': 2 });
  });

  it('fails with unsupported_version for a wrong format_version, naming the key and the file', async () => {
    const manifest = await writeBundle(dir);
    manifest.format_version = 2;
    await writeManifest(dir, manifest);
    const error = await expectBundleError(() => readManifest(dir), 'unsupported_version');
    expect(error.message).toContain('format_version');
    expect(error.message).toContain(path.join(dir, 'manifest.json'));
    expect(error.message).toContain('2');
    // verifyBundle reads the manifest first, so it fails the same way
    await expectBundleError(() => verifyBundle(dir), 'unsupported_version');
  });

  it('fails with bad_manifest for a non-integer format_version or a wrong format', async () => {
    const manifest = await writeBundle(dir);
    manifest.format_version = '1';
    await writeManifest(dir, manifest);
    let error = await expectBundleError(() => readManifest(dir), 'bad_manifest');
    expect(error.key).toBe('format_version');

    manifest.format_version = 1;
    manifest.format = 'something-else';
    await writeManifest(dir, manifest);
    error = await expectBundleError(() => readManifest(dir), 'bad_manifest');
    expect(error.message).toContain('"format"');
    expect(error.message).toContain('something-else');
  });

  it.each([
    ['files', (m: Manifest) => delete m.files],
    ['format_version', (m: Manifest) => delete m.format_version],
    ['model.llm_head_dim', (m: Manifest) => delete m.model.llm_head_dim],
    ['tokens.llm_eos_token_id', (m: Manifest) => delete m.tokens.llm_eos_token_id],
    ['prompt.chat_template', (m: Manifest) => delete m.prompt.chat_template],
    ['graphs.embed_tokens', (m: Manifest) => delete m.graphs.embed_tokens],
    ['graphs.decoder_model_merged.file', (m: Manifest) => delete m.graphs.decoder_model_merged.file],
  ])('fails with bad_manifest naming a missing required key: %s', async (key, remove) => {
    const manifest = await writeBundle(dir);
    remove(manifest);
    await writeManifest(dir, manifest);
    const error = await expectBundleError(() => readManifest(dir), 'bad_manifest');
    expect(error.key).toBe(key);
    expect(error.message).toContain(`missing required key "${key}"`);
    expect(error.message).toContain(path.join(dir, 'manifest.json'));
  });

  it('fails with bad_manifest on bad values, naming the key', async () => {
    const cases: [string, (m: Manifest) => void][] = [
      ['model.num_query_tokens', (m) => (m.model.num_query_tokens = 3.5)],
      ['source', (m) => (m.source = 'download')],
      ['files.onnx/embed_tokens.onnx', (m) => (m.files['onnx/embed_tokens.onnx'] = 'ABC')],
      ['graphs.embed_tokens.file', (m) => (m.graphs.embed_tokens.file = '../outside.onnx')],
      ['graphs.embed_tokens.inputs[0].shape', (m) => (m.graphs.embed_tokens.inputs[0].shape = ['batch', -1])],
      ['variants.int8.lm_head', (m) => (m.variants.int8.lm_head = 'onnx/x.onnx')],
      ['prompt.chat_template', (m) => (m.prompt.chat_template = 'no placeholder')],
    ];
    const base = await writeBundle(dir);
    for (const [key, mutate] of cases) {
      const manifest = structuredClone(base);
      mutate(manifest);
      await writeManifest(dir, manifest);
      const error = await expectBundleError(() => readManifest(dir), 'bad_manifest');
      expect(error.key, `case ${key}`).toBe(key);
      expect(error.message, `case ${key}`).toContain(key.split('.')[0]);
    }
  });

  it('fails with bad_manifest naming the file when manifest.json is not JSON', async () => {
    await writeFile(path.join(dir, 'manifest.json'), '{ "format": ');
    const error = await expectBundleError(() => readManifest(dir), 'bad_manifest');
    expect(error.message).toContain(path.join(dir, 'manifest.json'));
    expect(error.message).toContain('not valid JSON');
  });
});
