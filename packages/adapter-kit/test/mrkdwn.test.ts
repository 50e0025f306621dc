import { describe, expect, it } from 'vitest';
import { markdownToMrkdwn } from '../src/index.js';

describe('markdownToMrkdwn', () => {
  it('converts emphasis, strikethrough, links and headings', () => {
    expect(markdownToMrkdwn('**bold** and __also bold__')).toBe('*bold* and *also bold*');
    expect(markdownToMrkdwn('*italic* and _italic_ and a*b*c')).toBe('_italic_ and _italic_ and a*b*c');
    expect(markdownToMrkdwn('***both***')).toBe('*_both_*');
    expect(markdownToMrkdwn('**bold with *italic* inside**')).toBe('*bold with _italic_ inside*');
    expect(markdownToMrkdwn('~~gone~~')).toBe('~gone~');
    expect(markdownToMrkdwn('see [the docs](https://example.test/a?b=1&c=2) now')).toBe('see <https://example.test/a?b=1&amp;c=2|the docs> now');
    expect(markdownToMrkdwn('![a cat](https://example.test/cat.png)')).toBe('<https://example.test/cat.png|a cat>');
    expect(markdownToMrkdwn('<https://example.test>')).toBe('<https://example.test>');
    expect(markdownToMrkdwn('# Title\n## Sub **x** ##\ntext')).toBe('*Title*\n*Sub x*\ntext');
  });

  it('turns bullets into •, and leaves numbered lists and quotes as they read', () => {
    expect(markdownToMrkdwn('- one\n* two\n  + three\n1. four')).toBe('• one\n• two\n  • three\n1. four');
    expect(markdownToMrkdwn('> quoted **x**\n>> deeper')).toBe('> quoted *x*\n>> deeper');
  });

  it('escapes &, < and > outside code', () => {
    expect(markdownToMrkdwn('a < b && c > d')).toBe('a &lt; b &amp;&amp; c &gt; d');
    expect(markdownToMrkdwn('<@U123> <!channel>')).toBe('&lt;@U123&gt; &lt;!channel&gt;');
  });

  it('leaves code spans and fences untouched', () => {
    expect(markdownToMrkdwn('use `a **b** < c` here')).toBe('use `a **b** < c` here');
    const fence = '```ts\nconst x = a && b < c; // **not bold** [t](u)\n# not a heading\n```';
    expect(markdownToMrkdwn(`**before**\n${fence}\n**after**`)).toBe(`*before*\n${fence}\n*after*`);
    // An unclosed fence runs to the end.
    expect(markdownToMrkdwn('text\n```\n**raw** <x>')).toBe('text\n```\n**raw** <x>');
    // An empty block does not swallow what follows.
    expect(markdownToMrkdwn('```\n```\n**b**')).toBe('```\n```\n*b*');
  });

  it('keeps plain text and snake_case as they are', () => {
    expect(markdownToMrkdwn('plain text, snake_case_name and 2 * 3 * 4')).toBe('plain text, snake_case_name and 2 * 3 * 4');
    expect(markdownToMrkdwn('')).toBe('');
  });

  it('rejects what is not a string', () => {
    expect(() => markdownToMrkdwn(null as unknown as string)).toThrow(/expected a string/);
  });
});
