// Conversation -> text ids, prompt ids and splice index, checked against the ids Python wrote for every
// golden row (training/vikdf/data.py `DialogueFormatter`), and the official Llama-2 rendering.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BundleTokenizer, PromptFormatter, dialogueMessages, readManifest, type BundleManifest } from '../src/index.js';
import { tinyBundle, tinyGoldenPath } from '@vikdf/test-support';

const bundleDir = tinyBundle;

interface GoldenRow {
  turns: string[];
  text_input_ids: number[];
  prompt_input_ids: number[];
  splice_at: number;
}

const manifest = await readManifest(bundleDir);
const textTokenizer = await BundleTokenizer.load(path.join(bundleDir, 'text_tokenizer/tokenizer.json'));
const llmTokenizer = await BundleTokenizer.load(path.join(bundleDir, 'llm_tokenizer/tokenizer.json'));
const golden: { cases: { name: string; rows: GoldenRow[] }[] } = JSON.parse(
  await readFile(tinyGoldenPath, 'utf8'),
);
const rows = golden.cases.flatMap((c) => c.rows.map((row, i) => ({ name: `${c.name}[${i}]`, row })));

const formatter = new PromptFormatter(manifest, textTokenizer, llmTokenizer);

/** The fixture manifest with another chat template. */
function withTemplate(chat_template: string, extra: Partial<BundleManifest['prompt']> = {}): PromptFormatter {
  const m: BundleManifest = { ...manifest, prompt: { ...manifest.prompt, chat_template, ...extra } };
  return new PromptFormatter(m, textTokenizer, llmTokenizer);
}

describe('dialogueMessages', () => {
  it('gives roles from the last turn backwards and trims contents', () => {
    expect(dialogueMessages([])).toEqual([{ role: 'user', content: '' }]);
    expect(dialogueMessages([' hi '])).toEqual([{ role: 'user', content: 'hi' }]);
    expect(dialogueMessages(['a1', 'a2'])).toEqual([
      { role: 'user', content: '' },
      { role: 'assistant', content: 'a1' },
      { role: 'user', content: 'a2' },
    ]);
    expect(dialogueMessages(['a1', 'a2', 'a3']).map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
  });
});

describe('PromptFormatter', () => {
  it.each(rows)('reproduces the Python ids of golden row $name', ({ row }) => {
    const got = formatter.format(row.turns);
    expect(got.textIds).toEqual(row.text_input_ids);
    expect(got.promptIds).toEqual(row.prompt_input_ids);
    expect(got.spliceAt).toBe(row.splice_at);
  });

  it('covers a context longer than both limits, keeping the text tokenizer end token', () => {
    const { row } = rows.find((r) => r.name.startsWith('longer-than-text-limit'))!;
    expect(row.text_input_ids).toHaveLength(manifest.text_encoder_input.max_length);
    expect(row.prompt_input_ids).toHaveLength(manifest.prompt.max_length);
    expect(formatter.format(row.turns).textIds.at(-1)).toBe(textTokenizer.trailingSpecials[0]);
    expect(formatter.countPromptTokens(row.turns)).toBeGreaterThan(manifest.prompt.max_length + manifest.model.num_query_tokens);
  });

  it('renders the official Llama-2 strings with the fixture template', () => {
    expect(formatter.render(['a1', 'a2', 'a3'])).toEqual({
      prefix: '[INST]',
      full: '[INST] a1 [/INST] a2 </s><s> [INST] a3 [/INST]',
    });
    expect(formatter.render(['a1', 'a2']).full).toBe('[INST] [/INST] a1 </s><s> [INST] a2 [/INST]');
    expect(formatter.render([' a1\n']).full).toBe('[INST] a1 [/INST]');
    expect(formatter.render([]).full).toBe('[INST] [/INST]');
  });

  it('renders whitespace as Python jinja2 does (no trim_blocks, no lstrip_blocks)', () => {
    // Expected string from jinja2.Environment(autoescape=False).from_string(src).render(...) in training/.venv.
    const src = '<<|knowledge|>>\n{% for m in messages %}\n  {{ m.role }}: {{ m.content }}\n{% endfor %}\n';
    expect(withTemplate(src).render(['yo', 'hi']).full).toBe('<>\n\n  user: \n\n  assistant: yo\n\n  user: hi\n');
  });

  it('passes system to the template only when given', () => {
    const f = withTemplate('{% if system %}[{{ system }}]{% endif %}<|knowledge|>{{ messages[-1].content }}');
    expect(f.render(['hi']).full).toBe('hi');
    expect(f.render(['hi'], { system: 'be kind' })).toEqual({ prefix: '[be kind]', full: '[be kind]hi' });
    expect(f.format(['hi'], { system: 'be kind' }).promptIds).toEqual(llmTokenizer.encode('[be kind]hi', { maxLength: 64 }));
  });

  it('splits at the first placeholder', () => {
    expect(withTemplate('a<|knowledge|>b<|knowledge|>c').render([])).toEqual({ prefix: 'a', full: 'ab<|knowledge|>c' });
  });

  it('names the template when the placeholder is not rendered', () => {
    const f = withTemplate('{% if false %}<|knowledge|>{% endif %}{{ messages[0].content }}');
    expect(() => f.render(['hi'])).toThrow(/prompt\.chat_template.*knowledge placeholder "<\|knowledge\|>"/);
    expect(() => withTemplate('{% if %}<|knowledge|>')).toThrow(/tiny-random.*prompt\.chat_template/);
  });

  it('names the template when its prefix does not tokenise to the start of the prompt', () => {
    // "he" is one token, so "h" + placeholder + "e" breaks the splice rule.
    expect(llmTokenizer.encode('he', { addSpecialTokens: false })).toHaveLength(1);
    const f = withTemplate('h<|knowledge|>e');
    expect(() => f.format(['x'])).toThrow(/prompt\.chat_template.*does not tokenise/);
  });

  it('clamps the splice index to a prompt truncated inside the prefix', () => {
    const f = withTemplate('[INST] [INST]<|knowledge|> x', { max_length: 3 });
    const { promptIds, spliceAt } = f.format(['hi']);
    expect(promptIds).toEqual(llmTokenizer.encode('[INST] [INST] x').slice(0, 3));
    expect(spliceAt).toBe(3);
  });

  it('counts prompt tokens before truncation, plus the knowledge vectors', () => {
    const turns = ['what did you do at the weekend?', 'i went hiking in the mountains.'];
    const full = formatter.render(turns).full;
    expect(formatter.countPromptTokens(turns)).toBe(llmTokenizer.encode(full).length + manifest.model.num_query_tokens);
    expect(formatter.countPromptTokens(turns)).toBe(46 + 4); // golden two-turns row: 46 prompt ids
  });
});
