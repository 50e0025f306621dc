// The committed tiny-random bundle as the TypeScript side sees it: it verifies, every graph's declared
// inputs and outputs match the manifest, and onnxruntime-node reproduces the PyTorch goldens for the
// knowledge encoder and the first decoder step (the full generation parity lands with the engine).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { verifyBundle, type BundleManifest as Manifest } from '../src/index.js';
import { tinyBundle, tinyGoldenPath } from '@vikdf/test-support';

const bundleDir = tinyBundle;

interface GoldenRow {
  text_input_ids: number[];
  prompt_input_ids: number[];
  splice_at: number;
  knowledge_embeds: number[][];
  first_step_top5: { ids: number[]; logits: number[] };
}
interface Golden {
  cases: { name: string; rows: GoldenRow[] }[];
}

const int64 = (rows: number[][]) =>
  new ort.Tensor('int64', BigInt64Array.from(rows.flat(), (v) => BigInt(v)), [rows.length, rows[0]!.length]);

async function session(manifest: Manifest, graph: keyof Manifest['graphs']) {
  return ort.InferenceSession.create(path.join(bundleDir, manifest.graphs[graph].file));
}

describe('test/fixtures/tiny-random', async () => {
  const manifest = await verifyBundle(bundleDir);
  const golden: Golden = JSON.parse(await readFile(tinyGoldenPath, 'utf8'));
  const rows = golden.cases.flatMap((c) => c.rows);

  it('declares the inputs and outputs its ONNX graphs really have', async () => {
    for (const graph of ['knowledge_encoder', 'embed_tokens', 'decoder_model_merged'] as const) {
      const s = await session(manifest, graph);
      expect(s.inputNames).toEqual(manifest.graphs[graph].inputs.map((t) => t.name));
      expect(s.outputNames).toEqual(manifest.graphs[graph].outputs.map((t) => t.name));
      await s.release();
    }
  });

  it('knowledge_encoder reproduces the PyTorch knowledge vectors within 1e-4', async () => {
    const s = await session(manifest, 'knowledge_encoder');
    for (const row of rows) {
      const ids = int64([row.text_input_ids]);
      const mask = int64([row.text_input_ids.map(() => 1)]);
      const out = await s.run({ input_ids: ids, attention_mask: mask });
      const got = out.knowledge_embeds!.data as Float32Array;
      const want = row.knowledge_embeds.flat();
      expect(got.length).toBe(want.length);
      let maxDiff = 0;
      want.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - got[i]!))));
      expect(maxDiff).toBeLessThan(1e-4);
    }
    await s.release();
  });

  it('the first decoder step gives the golden top-5', async () => {
    const embed = await session(manifest, 'embed_tokens');
    const encoder = await session(manifest, 'knowledge_encoder');
    const decoder = await session(manifest, 'decoder_model_merged');
    const { llm_hidden_size: hidden, llm_num_layers: layers, llm_num_key_value_heads: heads, llm_head_dim: headDim } =
      manifest.model;
    for (const row of rows) {
      const k = (await encoder.run({ input_ids: int64([row.text_input_ids]), attention_mask: int64([row.text_input_ids.map(() => 1)]) }))
        .knowledge_embeds!.data as Float32Array;
      const e = (await embed.run({ input_ids: int64([row.prompt_input_ids]) })).inputs_embeds!.data as Float32Array;
      const cut = row.splice_at * hidden;
      const spliced = new Float32Array(e.length + k.length);
      spliced.set(e.subarray(0, cut), 0);
      spliced.set(k, cut);
      spliced.set(e.subarray(cut), cut + k.length);
      const length = spliced.length / hidden;
      const feeds: Record<string, ort.Tensor> = {
        inputs_embeds: new ort.Tensor('float32', spliced, [1, length, hidden]),
        attention_mask: int64([Array.from({ length }, () => 1)]),
        position_ids: int64([Array.from({ length }, (_, i) => i)]),
      };
      for (let i = 0; i < layers; i++) {
        for (const kind of ['key', 'value']) {
          feeds[`past_key_values.${i}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, headDim]);
        }
      }
      const logits = (await decoder.run(feeds)).logits!;
      const vocab = logits.dims[2]!;
      const last = (logits.data as Float32Array).subarray((length - 1) * vocab, length * vocab);
      const top = [...last.keys()].sort((a, b) => last[b]! - last[a]! || a - b).slice(0, 5);
      expect(top).toEqual(row.first_step_top5.ids);
      top.forEach((id, i) => expect(Math.abs(last[id]! - row.first_step_top5.logits[i]!)).toBeLessThan(1e-4));
    }
    await Promise.all([embed.release(), encoder.release(), decoder.release()]);
  });
});
