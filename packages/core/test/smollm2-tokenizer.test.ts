// Cross-language parity on SmolLM2's real tokenizer (test/fixtures/smollm2-tokenizer: tokenizer.json and the
// chat template that `vikdf-train import-gguf --tokenizer-only` rebuilt from SmolLM2-135M-Instruct.Q4_1.gguf).
// parity.json holds what the Python side gives (`vikdf-train tokenizer-parity`: `tokenizers` ids, jinja2
// renderings); training/tests/test_gguf_import.py checks that file is still what Python writes.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Template, parse, tokenize } from '@huggingface/jinja';
import { describe, expect, it } from 'vitest';
import { BundleTokenizer } from '../src/index.js';
import { fixturesDir } from '@vikdf/test-support';

interface Parity {
  texts: { text: string; ids: number[] }[];
  chats: { messages: { role: string; content: string }[]; add_generation_prompt: boolean; text: string; ids: number[] }[];
}

const dir = path.join(fixturesDir, 'smollm2-tokenizer');
const parity: Parity = JSON.parse(await readFile(path.join(dir, 'parity.json'), 'utf8'));
const config = JSON.parse(await readFile(path.join(dir, 'tokenizer_config.json'), 'utf8')) as { chat_template: string };
const tokenizer = await BundleTokenizer.load(path.join(dir, 'tokenizer.json'));

// As packages/core/src/prompt.ts renders bundle templates: jinja2's defaults (no trim_blocks / lstrip_blocks).
function renderChat(source: string, vars: Record<string, unknown>): string {
  const template = new Template(source);
  template.parsed = parse(tokenize(source));
  return template.render(vars);
}

describe('SmolLM2 tokenizer: TypeScript ids equal Python tokenizers', () => {
  it('covers the corpus it claims to', () => {
    const all = parity.texts.map((t) => t.text).join('\n');
    for (const probe of [/\p{Extended_Pictographic}/u, /[\u00C0-\u017F]/u, /\p{Script=Han}/u, /\p{Script=Hangul}/u,
      /\d/, /def |\{ c\[i\]/, / {3}|\t\t|\n\n/, /<\|im_start\|>/]) {
      expect(all).toMatch(probe);
    }
    expect(tokenizer.vocabSize).toBe(49152);
    expect(tokenizer.leadingSpecials).toEqual([]); // SmolLM2 adds no BOS
  });

  it.each(parity.texts.map((t, i) => [i, t] as const))('text %i', (_i, { text, ids }) => {
    expect(tokenizer.encode(text, { addSpecialTokens: false })).toEqual(ids);
  });

  it('ChatML markers are single special ids', () => {
    expect(tokenizer.encode('<|im_start|>user\nhi<|im_end|>', { addSpecialTokens: false })).toEqual([1, ...tokenizer.encode('user\nhi', { addSpecialTokens: false }), 2]);
    expect(tokenizer.isSpecial(1) && tokenizer.isSpecial(2) && tokenizer.isSpecial(0)).toBe(true);
  });

  it.each(parity.chats.map((c, i) => [i, c] as const))('chat %i: template rendering and ids', (_i, chat) => {
    const text = renderChat(config.chat_template, { messages: chat.messages, add_generation_prompt: chat.add_generation_prompt });
    expect(text).toBe(chat.text);
    expect(text.endsWith('<|im_start|>assistant\n')).toBe(true);
    expect(tokenizer.encode(text, { addSpecialTokens: false })).toEqual(chat.ids);
  });
});
