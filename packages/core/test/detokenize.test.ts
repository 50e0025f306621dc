// StreamDecoder: one id at a time, never a partial character, and the chunks add up to decode(all ids).
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BundleTokenizer, StreamDecoder, trimReplyStart } from '../src/index.js';
import { tinyBundle } from '@vikdf/test-support';

const bundleDir = tinyBundle;
const llmTokenizer = await BundleTokenizer.load(path.join(bundleDir, 'llm_tokenizer/tokenizer.json'));

/**
 * A tiny tokenizer shaped like Llama-2's (the official VIKDF LLM): SentencePiece-style `▁`, byte fallback for
 * characters outside the vocabulary, and a decoder that strips the text's first space.
 */
function llamaStyleTokenizer({ strip = true } = {}): BundleTokenizer {
  const specials = ['<unk>', '<s>', '</s>'];
  const bytes = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const vocab = Object.fromEntries([...specials, ...bytes, '▁', 'h', 'i', 'a', '▁h', '▁hi'].map((t, id) => [t, id]));
  const sequence = (id: string, type_id: number) => ({ Sequence: { id, type_id } });
  return BundleTokenizer.fromJSON({
    version: '1.0',
    added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, sequence('A', 0)],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, sequence('A', 0), sequence('B', 1)],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(strip ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: [['▁', 'h'], ['▁h', 'i']],
    },
  }, 'llama-style');
}

function stream(ids: number[], decoder = new StreamDecoder(llmTokenizer)): { chunks: string[]; text: string } {
  const chunks = ids.map((id) => decoder.push(id));
  chunks.push(decoder.flush());
  return { chunks, text: chunks.join('') };
}

const TEXTS = [
  'café au lait ☕ or thé? 🙂',
  'Ça va? Ünïcödé àéîõü ñ',
  '日本語のテキストと中文字符',
  '👍🏽 family: 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵',
  'plain ascii, with spaces  and\nnewlines',
];

describe('StreamDecoder', () => {
  it.each(TEXTS)('streams %j without partial characters', (text) => {
    const ids = llmTokenizer.encode(text, { addSpecialTokens: false });
    // The byte-level BPE really does split characters here: some single ids decode to U+FFFD.
    if (/[^\x00-\x7f]/.test(text)) expect(ids.some((id) => llmTokenizer.decode([id]).includes('\uFFFD'))).toBe(true);
    const { chunks, text: got } = stream(ids);
    for (const chunk of chunks) expect(chunk).not.toContain('\uFFFD');
    expect(got).toBe(llmTokenizer.decode(ids));
    expect(got).toBe(text);
  });

  it('skips special tokens by default and keeps them when asked', () => {
    const ids = [1, ...llmTokenizer.encode('thé 🙂', { addSpecialTokens: false }), 2];
    expect(stream(ids).text).toBe('thé 🙂');
    const kept = stream(ids, new StreamDecoder(llmTokenizer, { skipSpecialTokens: false }));
    expect(kept.text).toBe('<s>thé 🙂</s>');
    expect(kept.text).toBe(llmTokenizer.decode(ids, { skipSpecialTokens: false }));
    expect(kept.chunks[0]).toBe('<s>');
  });

  it('emits text as soon as it is complete', () => {
    const ids = llmTokenizer.encode('a é', { addSpecialTokens: false });
    const decoder = new StreamDecoder(llmTokenizer);
    const chunks = ids.map((id) => decoder.push(id));
    // The last id completes é, so nothing is left for flush.
    expect(chunks.join('')).toBe('a é');
    expect(decoder.flush()).toBe('');
  });

  it('flushes a character no token completed, as decode does', () => {
    const ids = llmTokenizer.encode('é', { addSpecialTokens: false }).slice(0, 1); // half of é
    const decoder = new StreamDecoder(llmTokenizer);
    expect(decoder.push(ids[0]!)).toBe('');
    expect(decoder.flush()).toBe('\uFFFD');
  });

  it('starts over after flush', () => {
    const decoder = new StreamDecoder(llmTokenizer);
    expect(stream(llmTokenizer.encode('one', { addSpecialTokens: false }), decoder).text).toBe('one');
    expect(stream(llmTokenizer.encode('two', { addSpecialTokens: false }), decoder).text).toBe('two');
  });

  it('streams a Llama-style tokenizer (byte fallback, first space stripped) as Python decodes it', () => {
    const llama = llamaStyleTokenizer();
    // Python tokenizers on the same tokenizer.json: ids of 'hi é 日 🙂', and the decode of each prefix.
    const ids = [1, 264, 259, 198, 172, 259, 233, 154, 168, 259, 243, 162, 156, 133];
    expect(llama.encode('hi é 日 🙂')).toEqual(ids);
    expect(ids.map((_, k) => llama.decode(ids.slice(0, k)))).toEqual(
      ['', '', 'hi', 'hi ', 'hi \uFFFD', 'hi é', 'hi é ', 'hi é \uFFFD', 'hi é \uFFFD\uFFFD', 'hi é 日', 'hi é 日 ', 'hi é 日 \uFFFD',
        'hi é 日 \uFFFD\uFFFD', 'hi é 日 \uFFFD\uFFFD\uFFFD'],
    );
    const { chunks, text } = stream(ids, new StreamDecoder(llama));
    expect(chunks).toEqual(['', 'hi', ' ', '', 'é', ' ', '', '', '日', ' ', '', '', '', '🙂', '']);
    expect(text).toBe('hi é 日 🙂');
    // The decoder drops the first space of the text only: a leading '▁' shows once more text follows.
    expect(llama.encode(' hi')).toEqual([1, 259, 264]);
    expect(stream([1, 259, 264], new StreamDecoder(llama)).text).toBe(' hi');
  });

  it('with replyStart, leaves out the first token\'s word-initial Ġ space and keeps every later space', () => {
    const ids = llmTokenizer.encode(' hi  there, you', { addSpecialTokens: false });
    expect(llmTokenizer.idToToken(ids[0]!)!.startsWith('\u0120')).toBe(true); // the reply's first token is word-initial
    expect(llmTokenizer.decode(ids)).toBe(' hi  there, you');
    const { chunks, text } = stream(ids, new StreamDecoder(llmTokenizer, { replyStart: true }));
    expect(text).toBe('hi  there, you');
    expect(chunks.find((c) => c !== '')).toMatch(/^h/);
    expect(trimReplyStart(llmTokenizer, ids, llmTokenizer.decode(ids))).toBe(text);
    // A start that is not a word-initial marker (a newline, two spaces as their own token) loses nothing more
    // than that one attached space.
    const newline = llmTokenizer.encode('\nhi', { addSpecialTokens: false });
    expect(stream(newline, new StreamDecoder(llmTokenizer, { replyStart: true })).text).toBe('\nhi');
    // Special tokens before the first word do not hide it.
    expect(stream([1, ...ids], new StreamDecoder(llmTokenizer, { replyStart: true })).text).toBe('hi  there, you');
    // Off by default: the decoder's contract stays decode(all ids).
    expect(stream(ids).text).toBe(' hi  there, you');
  });

  it('with replyStart, leaves out a SentencePiece ▁ first space unless the decoder already strips it', () => {
    // ids: 259 '▁', 264 '▁hi'. Without a Strip decoder the ▁ shows as a leading space; as a reply it goes.
    const plain = llamaStyleTokenizer({ strip: false });
    expect(plain.decode([1, 264, 259, 264])).toBe(' hi  hi');
    expect(stream([1, 264, 259, 264], new StreamDecoder(plain, { replyStart: true })).text).toBe('hi  hi');
    // Llama's decoder strips the first space itself: nothing more is removed, the later space stays.
    const llama = llamaStyleTokenizer();
    expect(stream([1, 264, 259, 264], new StreamDecoder(llama, { replyStart: true })).text).toBe('hi  hi');
    expect(stream([1, 259, 264], new StreamDecoder(llama, { replyStart: true })).text).toBe(' hi');
  });

  it('matches decode for random id sequences', () => {
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let n = 0; n < 50; n++) {
      const ids = Array.from({ length: 1 + (next() % 24) }, () => next() % llmTokenizer.vocabSize);
      expect(stream(ids).text).toBe(llmTokenizer.decode(ids));
    }
  });
});
