import { describe, expect, it } from 'vitest';
import { splitMessage } from '../src/index.js';

/** Each chunk's fences balance: every fence opened in a chunk is closed in it. */
function openFenceAtEnd(chunk: string): string | null {
  let open: string | null = null;
  for (const line of chunk.split('\n')) {
    const m = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(line);
    if (!m) continue;
    if (open === null) {
      if (!(m[1]![0] === '`' && m[2]!.includes('`'))) open = m[1]!;
    } else if (m[1]![0] === open[0] && m[1]!.length >= open.length && m[2]!.trim() === '') open = null;
  }
  return open;
}

/** A seeded generator, so that a failing random case can be replayed. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

const WORDS = ['the', 'model', 'writes', 'a', 'reply', 'with', 'knowledge', 'vectors', 'and', 'code', 'x', 'splitting'];

function randomText(rand: () => number): string {
  const blocks: string[] = [];
  const n = 1 + Math.floor(rand() * 8);
  for (let b = 0; b < n; b++) {
    if (rand() < 0.3) {
      const lang = ['ts', 'python', '', 'js'][Math.floor(rand() * 4)]!;
      const lines = Array.from({ length: 1 + Math.floor(rand() * 30) }, (_, i) => `  const v${i} = compute(${i}, "${WORDS[i % WORDS.length]}");`);
      blocks.push(['```' + lang, ...lines, '```'].join('\n'));
    } else {
      const words = Array.from({ length: 5 + Math.floor(rand() * 120) }, () => WORDS[Math.floor(rand() * WORDS.length)]!);
      let text = '';
      for (const w of words) text += (text ? (rand() < 0.08 ? '\n' : ' ') : '') + w;
      blocks.push(text);
    }
  }
  return blocks.join('\n\n');
}

/** The words of a text outside fence lines, in order. */
const wordsOf = (text: string) =>
  text
    .split('\n')
    .filter((l) => !/^ {0,3}(`{3,}|~{3,})/.test(l))
    .join(' ')
    .split(/\s+/)
    .filter(Boolean);

describe('splitMessage', () => {
  it('returns short text as one chunk, trimmed, and blank text as none', () => {
    expect(splitMessage('  hello world \n', 2000)).toEqual(['  hello world']);
    expect(splitMessage('\n\nhello', 10)).toEqual(['hello']);
    expect(splitMessage('', 2000)).toEqual([]);
    expect(splitMessage(' \n\t\n ', 2000)).toEqual([]);
  });

  it('prefers paragraphs, then lines, then words', () => {
    const para = 'aaaa bbbb\ncccc dddd\n\neeee ffff';
    expect(splitMessage(para, 22)).toEqual(['aaaa bbbb\ncccc dddd', 'eeee ffff']);
    expect(splitMessage('aaaa bbbb\ncccc dddd eeee', 16)).toEqual(['aaaa bbbb', 'cccc dddd eeee']);
    expect(splitMessage('aaaa bbbb cccc dddd', 12)).toEqual(['aaaa bbbb', 'cccc dddd']);
  });

  it('prefers a later line break over a paragraph break early in the room', () => {
    const text = `intro\n\n${'word '.repeat(30).trim()}\n${'more '.repeat(10).trim()}`;
    const chunks = splitMessage(text, 170);
    expect(chunks[0]).toBe(`intro\n\n${'word '.repeat(30).trim()}`);
  });

  it('cuts a word only when it alone is longer than the limit', () => {
    const long = 'x'.repeat(25);
    expect(splitMessage(`hi ${long} there`, 10)).toEqual(['hi', 'xxxxxxxxxx', 'xxxxxxxxxx', 'xxxxx', 'there']);
    expect(splitMessage(`short ${'y'.repeat(10)}`, 10)).toEqual(['short', 'y'.repeat(10)]);
  });

  it('does not split a surrogate pair', () => {
    const chunks = splitMessage('😀'.repeat(5), 3);
    for (const c of chunks) {
      expect(c.length).toBeLessThanOrEqual(3);
      expect(c).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/);
    }
    expect(chunks.join('')).toBe('😀'.repeat(5));
  });

  it('closes a code fence at a cut and reopens it with its language', () => {
    const code = Array.from({ length: 12 }, (_, i) => `print(${i})`).join('\n');
    const text = `Here is code:\n\n\`\`\`python\n${code}\n\`\`\`\n\nDone.`;
    const chunks = splitMessage(text, 60);
    expect(chunks.length).toBeGreaterThan(2);
    for (const c of chunks) {
      expect(c.length).toBeLessThanOrEqual(60);
      expect(openFenceAtEnd(c)).toBeNull();
    }
    // Every chunk after the first that holds code starts by reopening the python fence.
    const withCode = chunks.filter((c) => c.includes('print('));
    expect(withCode[0]).toMatch(/```python\nprint\(0\)/);
    for (const c of withCode.slice(1)) expect(c.startsWith('```python\n')).toBe(true);
    expect(chunks.at(-1)).toMatch(/Done\.$/);
    // The code lines all survive, whole and in order.
    const lines = chunks.join('\n').split('\n').filter((l) => l.startsWith('print('));
    expect(lines).toEqual(code.split('\n'));
  });

  it('keeps longer fences and tildes, and ignores fence-like text inside a fence', () => {
    const body = Array.from({ length: 10 }, (_, i) => (i === 4 ? '```inner' : `line ${i}`)).join('\n');
    const text = `~~~~md\n${body}\n~~~~`;
    const chunks = splitMessage(text, 40);
    for (const c of chunks) {
      expect(c.startsWith('~~~~md\n')).toBe(true);
      expect(c.endsWith('\n~~~~')).toBe(true);
    }
    expect(chunks.join('\n')).toContain('```inner');
  });

  it('does not leave an empty code block at a cut', () => {
    const text = `${'intro words here '.repeat(2).trim()}\n\`\`\`js\n${'let a = 1;\n'.repeat(4).trim()}\n\`\`\``;
    for (let max = 24; max < text.length; max++) {
      for (const c of splitMessage(text, max)) {
        expect(c, `max ${max}`).not.toMatch(/```js\n```/);
        expect(c.length).toBeLessThanOrEqual(max);
      }
    }
  });

  it('holds its promises on random texts', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const rand = rng(seed);
      const text = randomText(rand);
      const max = [40, 80, 120, 200, 2000][seed % 5]!;
      const chunks = splitMessage(text, max);
      const label = `seed ${seed}, max ${max}`;
      expect(chunks.length, label).toBeGreaterThan(0);
      for (const c of chunks) {
        expect(c.length, label).toBeLessThanOrEqual(max);
        expect(c.trim(), label).not.toBe('');
        expect(openFenceAtEnd(c), `${label}: ${JSON.stringify(c)}`).toBeNull();
      }
      // No word lost, added or broken (every word here is shorter than the room).
      expect(wordsOf(chunks.join('\n')), label).toEqual(wordsOf(text));
    }
  });

  it('rejects bad input with a clear error', () => {
    expect(() => splitMessage('x', 0)).toThrow(/maxLength must be a positive integer/);
    expect(() => splitMessage('x', 1.5)).toThrow(RangeError);
    expect(() => splitMessage(undefined as unknown as string, 10)).toThrow(/text must be a string/);
  });

  it('still makes progress when the limit is too small for fences', () => {
    const chunks = splitMessage('```typescript\nconst a = 1;\n```', 8);
    for (const c of chunks) expect(c.length).toBeLessThanOrEqual(8);
    expect(chunks.join('')).toContain('const');
  });
});
