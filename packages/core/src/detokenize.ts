/**
 * Streaming detokenization: text for each generated id as soon as it is final.
 */
import type { BundleTokenizer } from './tokenizer.js';

export interface StreamDecoderOptions {
  /** Leave out special tokens (`</s>`, ...), as the final answer does. Default true. */
  skipSpecialTokens?: boolean;
  /**
   * The ids are a reply that starts a text of its own: leave out the one space that the tokenizer attaches to
   * a word-initial first token (byte-level `Ġ`, SentencePiece `▁`), which `decode` keeps because the reply
   * continues the prompt. Spaces after the first token stay as decoded. Default false.
   */
  replyStart?: boolean;
}

/** How tokenizers mark a word-initial token: byte-level BPE's `Ġ` (a space byte) and SentencePiece's `▁`. */
const WORD_START_MARKERS = ['\u0120', '\u2581'];

/**
 * `text`, the decoding of `ids`, without the space its first token attaches to the word it starts
 * (see `StreamDecoder`'s `replyStart`). Only that one space goes: a first token that is not word-initial
 * (a newline, a byte-fallback `<0x20>`), or a decoder that already strips it (Llama's), leaves `text` as it is.
 */
export function trimReplyStart(tokenizer: BundleTokenizer, ids: readonly number[], text: string, skipSpecialTokens = true): string {
  if (!text.startsWith(' ')) return text;
  const first = ids.find((id) => tokenizer.idToToken(id) !== undefined && !(skipSpecialTokens && tokenizer.isSpecial(id)));
  const token = first === undefined ? undefined : tokenizer.idToToken(first);
  if (token === undefined || !WORD_START_MARKERS.some((m) => token.startsWith(m))) return text;
  // A decoder that strips the text's first space (Llama's) has already taken it: the space left is a later one.
  if (!tokenizer.decode([first!], { skipSpecialTokens }).startsWith(' ')) return text;
  return text.slice(1);
}

/**
 * Turns generated ids, one at a time, into text chunks whose concatenation (all pushes, then `flush`) is
 * exactly `tokenizer.decode(allIds)` (with `replyStart`, that text less the first token's word-initial space).
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
  private readonly replyStart: boolean;
  /** The text returned so far, always a prefix of the current decode. */
  private emitted = '';

  constructor(
    private readonly tokenizer: BundleTokenizer,
    { skipSpecialTokens = true, replyStart = false }: StreamDecoderOptions = {},
  ) {
    this.skipSpecialTokens = skipSpecialTokens;
    this.replyStart = replyStart;
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
    const text = this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
    return this.replyStart ? trimReplyStart(this.tokenizer, this.ids, text, this.skipSpecialTokens) : text;
  }
}
