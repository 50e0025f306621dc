/**
 * A bundle tokenizer (`text_tokenizer/tokenizer.json`, `llm_tokenizer/tokenizer.json`) on top of the pure-JS
 * `@huggingface/tokenizers`, with the truncation that library lacks. It follows Python's `tokenizers`, which
 * wrote the goldens (training/vikdf/data.py `encode`).
 */
import { readFile } from 'node:fs/promises';
import { Tokenizer } from '@huggingface/tokenizers';
import { BundleError, type Truncation } from './bundle.js';

export interface EncodeOptions {
  /** Add the post-processor's special tokens (e.g. `<s>`, or CLIP's start and end tokens). Default true. */
  addSpecialTokens?: boolean;
  /** At most this many ids, special tokens included; they are kept, the text's tokens are cut. */
  maxLength?: number;
  /** Which end of the text loses tokens. Default 'right' (keep the beginning). */
  truncation?: Truncation;
}

export interface DecodeOptions {
  /** Leave out special added tokens (`<s>`, `</s>`, ...). Default true, as in Python's `tokenizers`. */
  skipSpecialTokens?: boolean;
}

// Any text whose encoding contains a non-special token; used to find the specials the post-processor adds.
const PROBE = 'a';

// A UTF-16 surrogate without its partner. Node's TextEncoder would silently turn it into U+FFFD; doing it
// here first makes that explicit and independent of the library.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export class BundleTokenizer {
  /** Special ids the post-processor puts before and after the text (for Llama `[<s>]` and `[]`). */
  readonly leadingSpecials: readonly number[];
  readonly trailingSpecials: readonly number[];
  readonly vocabSize: number;
  private readonly specialIds: ReadonlySet<number>;

  private constructor(
    private readonly tokenizer: Tokenizer,
    /** Where the tokenizer came from, for error messages. */
    readonly source: string,
  ) {
    this.specialIds = new Set([...tokenizer.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id));
    this.vocabSize = tokenizer.get_vocab(true).size;

    // The post-processor adds the same specials around any text: locate the probe's own ids between them.
    const plain = this.rawEncode(PROBE, false);
    const full = this.rawEncode(PROBE, true);
    const at = indexOfRun(full, plain);
    if (plain.length === 0 || at < 0) {
      const message = `${source}: cannot tell which special tokens the post-processor adds, so cannot truncate`;
      throw new BundleError('bad_tokenizer', message, { file: source });
    }
    this.leadingSpecials = full.slice(0, at);
    this.trailingSpecials = full.slice(at + plain.length);
  }

  /** Reads a `tokenizer.json`; a missing or malformed file is a BundleError `bad_tokenizer` naming it. */
  static async load(file: string): Promise<BundleTokenizer> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw new BundleError('bad_tokenizer', `${file}: cannot read tokenizer (${(error as Error).message})`, { file, cause: error });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new BundleError('bad_tokenizer', `${file}: tokenizer is not valid JSON (${(error as Error).message})`, { file, cause: error });
    }
    return BundleTokenizer.fromJSON(json, file);
  }

  /** Builds a tokenizer from parsed `tokenizer.json` content; `source` names it in errors. */
  static fromJSON(json: unknown, source = 'tokenizer.json'): BundleTokenizer {
    let tokenizer: Tokenizer;
    try {
      // Config `{}`: Python's `tokenizers` reads nothing but tokenizer.json either.
      tokenizer = new Tokenizer(json as object, {});
    } catch (error) {
      throw new BundleError('bad_tokenizer', `${source}: not a valid tokenizer (${(error as Error).message})`, { file: source, cause: error });
    }
    matchPythonByteFallback(tokenizer.decoder as LibDecoder | null);
    return new BundleTokenizer(tokenizer, source);
  }

  /**
   * Token ids of `text`. With `maxLength`, truncates as Hugging Face `tokenizers` does: the text's tokens are
   * cut to `maxLength - number of specials`, then the specials are added, so e.g. CLIP's end token survives.
   * If `maxLength` is smaller than the number of specials, only the specials remain (as in the Python
   * reference). Lone UTF-16 surrogates are replaced with U+FFFD, so encoding never throws on them.
   */
  encode(text: string, { addSpecialTokens = true, maxLength, truncation = 'right' }: EncodeOptions = {}): number[] {
    const ids = this.rawEncode(text, false);
    const lead = addSpecialTokens ? this.leadingSpecials : [];
    const trail = addSpecialTokens ? this.trailingSpecials : [];
    if (maxLength !== undefined) {
      const keep = Math.max(maxLength - lead.length - trail.length, 0);
      if (ids.length > keep) ids.splice(truncation === 'right' ? keep : 0, ids.length - keep);
    }
    return [...lead, ...ids, ...trail];
  }

  /** Number of ids of `text`, without truncation. */
  countTokens(text: string, { addSpecialTokens = true }: { addSpecialTokens?: boolean } = {}): number {
    return this.encode(text, { addSpecialTokens }).length;
  }

  /**
   * Text of `ids`, as Python's `tokenizers` decodes it: unknown ids are skipped, no clean-up of spaces
   * (the JS library would otherwise apply transformers' `clean_up_tokenization_spaces`), and bytes that
   * are not valid UTF-8 (a character cut by byte-level BPE) become U+FFFD.
   */
  decode(ids: readonly number[], { skipSpecialTokens = true }: DecodeOptions = {}): string {
    const known = ids.filter((id) => this.tokenizer.id_to_token(id) !== undefined);
    if (known.length === 0) return ''; // the library throws on an empty list
    return this.tokenizer.decode(known, { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  /** Whether `id` is a special added token (skipped by `decode` by default). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  private rawEncode(text: string, addSpecialTokens: boolean): number[] {
    return this.tokenizer.encode(text.replace(LONE_SURROGATE, '\uFFFD'), { add_special_tokens: addSpecialTokens }).ids;
  }
}

// Python's ByteFallback decoder turns a byte group that is not valid UTF-8 into one U+FFFD per byte; the JS
// one decodes it lossily (one U+FFFD per invalid run). Swap in a decoder with Python's rule (this reaches into
// the pinned library's `text_decoder`; the Llama-style test in test/detokenize.test.ts checks the result).
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const pythonByteGroup = {
  decode(bytes: Uint8Array): string {
    try {
      return strictUtf8.decode(bytes);
    } catch {
      return '\uFFFD'.repeat(bytes.length);
    }
  },
};

interface LibDecoder {
  config?: { type?: string };
  decoders?: LibDecoder[]; // a Sequence decoder's parts
  text_decoder?: unknown;
}

function matchPythonByteFallback(decoder: LibDecoder | null): void {
  if (decoder?.config?.type === 'ByteFallback') decoder.text_decoder = pythonByteGroup;
  decoder?.decoders?.forEach(matchPythonByteFallback);
}

/** First index at which `run` occurs in `list` as a contiguous run, or -1. */
function indexOfRun(list: readonly number[], run: readonly number[]): number {
  for (let i = 0; i + run.length <= list.length; i++) {
    if (run.every((v, j) => list[i + j] === v)) return i;
  }
  return -1;
}
