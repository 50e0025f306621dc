// The engine on the tiny fixture: golden parity with the PyTorch model (knowledge vectors, greedy and beam ids),
// continuous batching, ordering, cancellation and bad input.
import { cp, readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BundleError, Engine, VikdfError, type GenerationResult } from '../src/index.js';
import { decidedIds, decidedSteps, tinyBundle, tinyGolden } from '@vikdf/test-support';

const bundle = tinyBundle;
const golden = tinyGolden();
const rows = golden.cases.flatMap((c) => c.rows.map((r) => ({ ...r, name: c.name })));
// A greedy step whose two best logits are closer than this may flip on another CPU (docs/reliability.md).
const tieMargin = 2 * golden.tolerance.logits_abs;
/** The golden greedy ids any correct runtime must give: up to the first near-tie, all of them if there is none. */
function expectDecidedGreedy(got: number[], r: (typeof rows)[number]): void {
  const want = decidedIds(r.greedy_ids, r.greedy_margins, tieMargin);
  expect(got.slice(0, want.ids.length), `${r.name} greedy`).toEqual(want.ids);
  if (want.complete) expect(got, `${r.name} greedy`).toEqual(r.greedy_ids);
}
// The golden greedy run has no n-gram constraint (the manifest's default of 3 is for beam search).
const greedy = { numBeams: 1, doSample: false, noRepeatNgramSize: 0, maxNewTokens: golden.new_tokens };
const beam = { numBeams: 3, noRepeatNgramSize: 3, lengthPenalty: 1, doSample: false, maxNewTokens: golden.new_tokens };

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(bundle, { devices: ['cpu'] });
});
afterAll(async () => {
  await engine.close();
});

describe('golden parity with PyTorch', () => {
  it('runs on the CPU provider and says why others were skipped', async () => {
    expect(engine.provider.device).toBe('cpu');
    const auto = await Engine.load(bundle);
    expect(auto.provider.device).toBe('cpu'); // no GPU on this machine: cuda and webgpu are skipped with reasons
    for (const s of auto.provider.skipped) expect(s.reason.length).toBeGreaterThan(10);
    await auto.close();
  });

  it('knowledge vectors within 1e-4 for every golden context', async () => {
    const k = await engine.runtime.encodeKnowledge(rows.map((r) => r.text_input_ids));
    rows.forEach((r, i) => {
      const want = r.knowledge_embeds.flat();
      let max = 0;
      want.forEach((v, j) => (max = Math.max(max, Math.abs(v - k[i]![j]!))));
      expect(max, r.name).toBeLessThan(1e-4);
    });
  });

  it('the golden greedy runs are decided: no near-tie in at least 75 % of their steps', () => {
    const decided = rows.reduce((n, r) => n + decidedSteps(r.greedy_margins, tieMargin), 0);
    expect(decided / rows.reduce((n, r) => n + r.greedy_margins.length, 0)).toBeGreaterThan(0.75);
  });

  it('greedy ids identical up to the first near-tie, one request at a time', async () => {
    for (const r of rows) {
      const result = await engine.generate({ context: r.turns, options: greedy }).result;
      expectDecidedGreedy(result.tokenIds, r);
    }
  });

  it('beam-3 no-repeat-3-gram ids identical', async () => {
    for (const r of rows) {
      const result = await engine.generate({ context: r.turns, options: beam }).result;
      expect(result.tokenIds, r.name).toEqual(r.beam3_no_repeat3_ids);
    }
  });

  it('the same ids when all golden contexts decode together (continuous batching)', async () => {
    const handles = rows.flatMap((r) => [
      engine.generate({ context: r.turns, options: greedy }),
      engine.generate({ context: r.turns, options: beam }),
    ]);
    const results = await Promise.all(handles.map((h) => h.result));
    rows.forEach((r, i) => {
      expectDecidedGreedy(results[2 * i]!.tokenIds, r);
      expect(results[2 * i + 1]!.tokenIds, `${r.name} beam`).toEqual(r.beam3_no_repeat3_ids);
    });
  });
});

describe('streaming, ordering and cancellation', () => {
  it('streams text whose concatenation is the result, with token events', async () => {
    const handle = engine.generate({ context: ['hello there'], options: { ...greedy, maxNewTokens: 12 } });
    const events: string[] = [];
    handle.on('token', (t) => events.push(t));
    let streamed = '';
    for await (const chunk of handle) streamed += chunk;
    const result = await handle.result;
    expect(streamed).toBe(result.text);
    expect(events.join('')).toBe(result.text);
    expect(result.usage.completionTokens).toBe(result.tokenIds.length);
  });

  it('answers one conversation in order, each reply seeing the previous one', async () => {
    const conversation = engine.conversation();
    const a = conversation.send('first message', { options: greedy });
    const b = conversation.send('second message', { options: greedy });
    const [ra, rb] = await Promise.all([a.result, b.result]);
    expect(conversation.history).toEqual(['first message', ra.text.trim(), 'second message', rb.text.trim()]);
    const direct = await engine.generate({ context: ['first message', ra.text.trim(), 'second message'], options: greedy }).result;
    expect(rb.tokenIds).toEqual(direct.tokenIds);
  });

  it('reset during a reply keeps that reply out of the new history', async () => {
    const conversation = engine.conversation();
    const pending = conversation.send('before the reset', { options: greedy });
    conversation.reset();
    await pending.result;
    expect(conversation.history).toEqual([]);
  });

  it('abort mid-stream stops that request only', async () => {
    const controller = new AbortController();
    const long = { numBeams: 1, doSample: false, maxNewTokens: 200 };
    const victim = engine.generate({ context: ['tell me a long story'], options: long, signal: controller.signal });
    const other = engine.generate({ context: rows[0]!.turns, options: greedy });
    let chunks = 0;
    for await (const _ of victim) {
      if (++chunks === 2) controller.abort();
    }
    const [v, o] = await Promise.all([victim.result, other.result]);
    expect(v.finishReason).toBe('aborted');
    expect(v.tokenIds.length).toBeLessThan(200);
    expect(o.tokenIds).toEqual(rows[0]!.greedy_ids);
    expect(engine.load.rows).toBe(0);
  });

  it('stop strings end the reply before the stop text', async () => {
    const full = await engine.generate({ context: ['hello there'], options: { ...greedy, maxNewTokens: 16 } }).result;
    const stop = full.text.slice(3, 5);
    const cut = await engine.generate({ context: ['hello there'], options: { ...greedy, maxNewTokens: 16, stopStrings: [stop] } }).result;
    expect(cut.finishReason).toBe('stop');
    expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
  });

  it('minNewTokens keeps end-of-sequence away until then', async () => {
    // A context for which the tiny model ends early (found with training/vikdf/onnx_runner.py).
    const context = ['music why'];
    const free = await engine.generate({ context, options: greedy }).result;
    expect(free.finishReason).toBe('eos');
    expect(free.tokenIds).toHaveLength(9);
    const forced = await engine.generate({ context, options: { ...greedy, minNewTokens: 16 } }).result;
    expect(forced.tokenIds).toHaveLength(16);
    expect(forced.finishReason).toBe('length');
    expect(forced.tokenIds.slice(0, 8)).toEqual(free.tokenIds.slice(0, 8));
  });

  it('an identical context reuses its prefill and gives the same reply', async () => {
    const context = ['a context seen twice', 'yes twice'];
    const before = engine.stats;
    const a = await engine.generate({ context, options: greedy }).result;
    const b = await engine.generate({ context, options: greedy }).result;
    expect(b.tokenIds).toEqual(a.tokenIds);
    expect(engine.stats.prefixHits - before.prefixHits).toBe(1);
    expect(engine.stats.prefills - before.prefills).toBe(1);
  });

  it('concurrent requests share decoder steps', async () => {
    const before = engine.stats.decodeSteps;
    const opts = { ...greedy, minNewTokens: 10, maxNewTokens: 10 };
    await Promise.all(['one', 'two', 'three', 'four'].map((m) => engine.generate({ context: [m], options: opts }).result));
    // 4 requests x 9 cached steps each would be 36 decoder calls one at a time; batched they take ~9.
    expect(engine.stats.decodeSteps - before).toBeLessThanOrEqual(12);
  });

  it('seeded sampling is reproducible', async () => {
    const opts = { doSample: true, numBeams: 1, temperature: 0.9, topP: 0.9, seed: 7, maxNewTokens: 10 };
    const a = await engine.generate({ context: ['hi'], options: opts }).result;
    const b = await engine.generate({ context: ['hi'], options: opts }).result;
    expect(a.tokenIds).toEqual(b.tokenIds);
  });
});

describe('bad input', () => {
  it('empty message and message over the limit are refused with codes', async () => {
    const conversation = engine.conversation();
    await expect(conversation.send('   ').result).rejects.toMatchObject({ code: 'empty_message' });
    await expect(conversation.send('word '.repeat(400)).result).rejects.toMatchObject({ code: 'message_too_long' });
    expect(conversation.history).toEqual([]);
  });

  it('lone UTF-16 surrogates do not break tokenisation or generation', async () => {
    const result = await engine.generate({ context: ['bad \uD800 text \uDFFF end'], options: { ...greedy, maxNewTokens: 4 } }).result;
    expect(result.tokenIds.length).toBeGreaterThan(0);
  });

  it('an unknown precision is refused at load, naming it', async () => {
    await expect(Engine.load(bundle, { devices: ['cpu'], precision: 'turbo' as 'fast' })).rejects.toThrow(/precision must be 'fast' or 'exact', not "turbo"/);
  });

  it('bad options fail that request only, naming the option', async () => {
    const bad = engine.generate({ context: ['hi'], options: { temperature: -1, doSample: true } });
    const good = engine.generate({ context: ['hi'], options: greedy });
    await expect(bad.result).rejects.toThrow(/temperature/);
    expect((await good.result).tokenIds.length).toBeGreaterThan(0);
  });

  it('a failing request does not disturb the others in its batch', async () => {
    const results: Promise<GenerationResult>[] = [];
    for (const r of rows.slice(0, 3)) results.push(engine.generate({ context: r.turns, options: greedy }).result);
    // A consumer whose token listener throws mid-batch: only its own request fails.
    const broken = engine.generate({ context: ['x'], options: greedy });
    broken.on('token', () => {
      throw new Error('listener exploded');
    });
    await expect(broken.result).rejects.toMatchObject({ code: 'generation_failed' });
    await expect(engine.generate({ context: ['x'], options: { ...greedy, maxNewTokens: 0 } }).result).rejects.toThrow(/maxNewTokens/);
    const done = await Promise.all(results);
    done.forEach((d, i) => expect(d.tokenIds).toEqual(rows[i]!.greedy_ids));
  });

  describe('broken bundles', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'vikdf-bad-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });
    const copy = async (name: string) => {
      const target = path.join(dir, name);
      await cp(bundle, target, { recursive: true });
      return target;
    };

    it('missing file', async () => {
      const b = await copy('missing');
      await rm(path.join(b, 'onnx/embed_tokens.onnx'));
      await expect(Engine.load(b)).rejects.toMatchObject({ code: 'missing_file', file: expect.stringContaining('embed_tokens.onnx') });
    });

    it('corrupt ONNX (checksums updated so that only ONNX Runtime can notice)', async () => {
      const b = await copy('corrupt');
      await writeFile(path.join(b, 'onnx/embed_tokens.onnx'), 'not an onnx model');
      await expect(Engine.load(b, { verify: false, devices: ['cpu'] })).rejects.toMatchObject({ code: 'corrupt_graph' });
    });

    it('manifest and graph disagree', async () => {
      const b = await copy('mismatch');
      const manifestPath = path.join(b, 'manifest.json');
      const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
      manifest.graphs.knowledge_encoder.outputs[1].name = 'projected';
      await writeFile(manifestPath, JSON.stringify(manifest));
      const err = await Engine.load(b, { devices: ['cpu'] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BundleError);
      expect((err as BundleError).code).toBe('graph_mismatch');
      expect((err as Error).message).toMatch(/knowledge_encoder\.onnx.*projected/);
    });
  });

  it('a closed engine refuses new requests', async () => {
    const e = await Engine.load(bundle, { devices: ['cpu'] });
    const inflight = e.generate({ context: ['hi'], options: greedy });
    await e.close();
    expect((await inflight.result).tokenIds.length).toBeGreaterThan(0); // close('finish') lets it complete
    await expect(e.generate({ context: ['hi'] }).result).rejects.toBeInstanceOf(VikdfError);
  });
});
