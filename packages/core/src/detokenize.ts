/**
 * Streaming detokenization: text for each generated id as soon as it is final.
 */
import type { BundleTokenizer } from './tokenizer.js';

export interface StreamDecoderOptions {
  /** Leave out special tokens (`</s>`, ...), as the final answer does. Default true. */
  skipSpecialTokens?: boolean;
}

/**
 * Turns generated ids, one at a time, into text chunks whose concatenation (all pushes, then `flush`) is
 * exactly `tokenizer.decode(allIds)`.
 *
 * A token's text cannot be decoded on its own: byte-level BPE can split a multi-byte character over several
 * tokens (its first part decodes to U+FFFD), and some decoders change a text depending on what follows or
 * precedes it (leading-space stripping). So each push decodes the whole id list and emits what it adds to
 * the text already emitted, holding back a trailing U+FFFD until the next token completes the character.
 * That costs O(n) per push, negligible at the lengths a reply has.
 */
export class StreamDecoder {
  private readonly ids: number[] = [];
  private readonly skipSpecialTokens: boolean;
  /** The text returned so far, always a prefix of the current decode. */
  private emitted = '';

  constructor(
    private readonly tokenizer: BundleTokenizer,
    { skipSpecialTokens = true }: StreamDecoderOptions = {},
  ) {
    this.skipSpecialTokens = skipSpecialTokens;
  }

  /** Adds one id; returns the text that became final (often '', never a partial character). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.decode();
    // Text already emitted cannot be taken back if a decoder rewrote it (none of the byte-level, Metaspace or
    // byte-fallback decoders does, with clean-up of spaces off): then wait, and `flush` emits the rest.
    if (!text.startsWith(this.emitted)) return '';
    let end = text.length;
    while (end > this.emitted.length && text[end - 1] === '\uFFFD') end--;
    const chunk = text.slice(this.emitted.length, end);
    this.emitted += chunk;
    return chunk;
  }

  /** Returns all text not yet emitted (a U+FFFD that no token completed included) and starts over. */
  flush(): string {
    const text = this.decode();
    let common = 0;
    while (common < this.emitted.length && text[common] === this.emitted[common]) common++;
    const rest = text.slice(common);
    this.ids.length = 0;
    this.emitted = '';
    return rest;
  }

  private decode(): string {
    return this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
  }
}
