// BundleTokenizer on the fixture's tokenizers: truncation as Hugging Face `tokenizers` does it, decoding as
// Python's `tokenizers` does it (expected ids and strings below were printed by training/.venv), errors.
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BundleError, BundleTokenizer } from '../src/index.js';
import { tinyBundle } from '@vikdf/test-support';

const bundleDir = tinyBundle;
const textTokenizer = await BundleTokenizer.load(path.join(bundleDir, 'text_tokenizer/tokenizer.json'));
const llmTokenizer = await BundleTokenizer.load(path.join(bundleDir, 'llm_tokenizer/tokenizer.json'));

const SAMPLE = 'hello, how are you today? 🙂';

describe('BundleTokenizer', () => {
  it('finds the specials the post-processor adds', () => {
    expect(textTokenizer.leadingSpecials).toEqual([0]); // <|startoftext|>
    expect(textTokenizer.trailingSpecials).toEqual([1]); // <|endoftext|>
    expect(llmTokenizer.leadingSpecials).toEqual([1]); // <s>
    expect(llmTokenizer.trailingSpecials).toEqual([]);
  });

  // Python: tok.enable_truncation(max_length=m); tok.encode(SAMPLE).ids
  it.each([
    [2, [0, 1]],
    [3, [0, 260, 1]],
    [5, [0, 260, 276, 80, 1]],
    [8, [0, 260, 276, 80, 13, 283, 280, 1]],
    [100, [0, 260, 276, 80, 13, 283, 280, 258, 277, 285, 310, 69, 298, 32, 222, 174, 255, 249, 226, 1]],
  ])('truncates the text tokenizer to %i keeping both specials', (maxLength, ids) => {
    expect(textTokenizer.encode(SAMPLE, { maxLength })).toEqual(ids);
  });

  it.each([
    [2, [1, 261]],
    [3, [1, 261, 278]],
    [5, [1, 261, 278, 81, 14]],
    [8, [1, 261, 278, 81, 14, 283, 281, 259]],
  ])('truncates the LLM tokenizer to %i keeping <s>', (maxLength, ids) => {
    expect(llmTokenizer.encode(SAMPLE, { maxLength })).toEqual(ids);
  });

  it('truncates on the left when asked, and without specials when they are off', () => {
    expect(llmTokenizer.encode(SAMPLE, { maxLength: 5, truncation: 'left' })).toEqual([1, 175, 256, 250, 227]);
    expect(textTokenizer.encode(SAMPLE, { maxLength: 3, addSpecialTokens: false })).toEqual([260, 276, 80]);
    expect(textTokenizer.encode(SAMPLE, { addSpecialTokens: false })).toHaveLength(18);
  });

  it('keeps only the specials when maxLength is below their number (the Python reference)', () => {
    expect(textTokenizer.encode(SAMPLE, { maxLength: 1 })).toEqual([0, 1]);
    expect(textTokenizer.encode(SAMPLE, { maxLength: 0 })).toEqual([0, 1]);
  });

  it('counts tokens with and without specials', () => {
    expect(textTokenizer.countTokens(SAMPLE)).toBe(20);
    expect(textTokenizer.countTokens(SAMPLE, { addSpecialTokens: false })).toBe(18);
    expect(llmTokenizer.countTokens('')).toBe(1);
  });

  it('replaces lone surrogates with U+FFFD instead of throwing', () => {
    for (const text of ['\uD800abc', 'abc\uDC00', 'a\uDBFF\uDBFFb', '\uDFFF\uD800']) {
      const broken = text.replace(/[\uD800-\uDFFF]/g, '\uFFFD');
      expect(llmTokenizer.encode(text)).toEqual(llmTokenizer.encode(broken));
      expect(textTokenizer.encode(text, { maxLength: 4 })).toEqual(textTokenizer.encode(broken, { maxLength: 4 }));
    }
    expect(llmTokenizer.decode(llmTokenizer.encode('\uD800abc'))).toBe('\uFFFDabc');
    // A well-formed pair is kept.
    expect(llmTokenizer.decode(llmTokenizer.encode('\uD83D\uDE42'))).toBe('🙂');
  });

  it('decodes as Python tokenizers does', () => {
    const ids = [69, 67, 72, 130, 105, 259, 87, 276, 67, 269, 223, 161, 249, 246]; // "café au lait ☕"
    expect(llmTokenizer.decode(ids)).toBe('café au lait ☕');
    expect(llmTokenizer.decode(ids.slice(0, 4))).toBe('caf\uFFFD'); // half of é
    expect(llmTokenizer.decode([1, ...ids, 2])).toBe('café au lait ☕');
    expect(llmTokenizer.decode([1, ...ids, 2], { skipSpecialTokens: false })).toBe('<s>café au lait ☕</s>');
    expect(llmTokenizer.decode([999, 5, 1000])).toBe('#'); // unknown ids are skipped
    expect(llmTokenizer.decode([])).toBe('');
    // No transformers-style clean-up of spaces before punctuation.
    expect(llmTokenizer.decode(llmTokenizer.encode("hello , world ! it 's"))).toBe("hello , world ! it 's");
  });

  it('maps ids and tokens and knows its specials', () => {
    expect(llmTokenizer.vocabSize).toBe(384);
    expect(textTokenizer.vocabSize).toBe(320);
    expect(llmTokenizer.tokenToId('</s>')).toBe(2);
    expect(llmTokenizer.idToToken(1)).toBe('<s>');
    expect(llmTokenizer.idToToken(100000)).toBeUndefined();
    expect(llmTokenizer.tokenToId('no such token')).toBeUndefined();
    expect([0, 1, 2, 3].map((id) => llmTokenizer.isSpecial(id))).toEqual([true, true, true, false]);
  });

  it('names a missing or malformed tokenizer file', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vikdf-tokenizer-'));
    const missing = path.join(dir, 'nope', 'tokenizer.json');
    await expect(BundleTokenizer.load(missing)).rejects.toThrow(missing);
    await expect(BundleTokenizer.load(missing)).rejects.toBeInstanceOf(BundleError);

    const notJson = path.join(dir, 'not-json.json');
    await writeFile(notJson, '{"model": ');
    await expect(BundleTokenizer.load(notJson)).rejects.toThrow(`${notJson}: tokenizer is not valid JSON`);

    const notTokenizer = path.join(dir, 'not-tokenizer.json');
    await writeFile(notTokenizer, '{"hello": 1}');
    await expect(BundleTokenizer.load(notTokenizer)).rejects.toThrow(`${notTokenizer}: not a valid tokenizer`);
  });
});
