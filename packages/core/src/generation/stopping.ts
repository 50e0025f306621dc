/**
 * When to stop generating: end-of-sequence and stop token ids, and stop strings in the decoded text.
 *
 * Stop strings are matched on text, not on tokens, since one string may span several tokens (and one token
 * may hold the end of a stop string plus more). The engine decodes the whole generated text after each token
 * and asks `checkText`; while streaming it emits only `streamable(text).text`, which holds back a tail that
 * could still turn out to be the start of a stop string.
 */

export interface StopCheckerOptions {
  /** End-of-sequence id(s). */
  eosTokenId?: number | readonly number[];
  /** More ids that end generation (kept in the ids, like eos). */
  stopTokenIds?: readonly number[];
  /** Strings that end generation; the text is cut before the first one found. Empty strings are ignored. */
  stopStrings?: readonly string[];
}

export interface TextCheck {
  /** True when the text contains a stop string. */
  stop: boolean;
  /** The text to show: cut before the stop string when `stop`. */
  text: string;
}

export class StopChecker {
  private readonly stopIds: Set<number>;
  readonly stopStrings: readonly string[];

  constructor(options: StopCheckerOptions = {}) {
    const eos = options.eosTokenId;
    this.stopIds = new Set([...(eos === undefined ? [] : typeof eos === 'number' ? [eos] : eos), ...(options.stopTokenIds ?? [])]);
    this.stopStrings = (options.stopStrings ?? []).filter((s) => s.length > 0);
  }

  /** Whether generating this id ends the sequence (eos or a stop token id). */
  checkToken(id: number): boolean {
    return this.stopIds.has(id);
  }

  /**
   * Looks for the stop strings in the whole generated text so far. When found, `text` is cut before the
   * earliest occurrence (of any stop string).
   */
  checkText(fullText: string): TextCheck {
    let cut = -1;
    for (const s of this.stopStrings) {
      const at = fullText.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    return cut < 0 ? { stop: false, text: fullText } : { stop: true, text: fullText.slice(0, cut) };
  }

  /**
   * How many trailing characters (UTF-16 code units) of `text` could be the beginning of a stop string, and
   * so must not be shown yet: the longest proper prefix of any stop string that `text` ends with.
   */
  holdBack(text: string): number {
    let held = 0;
    for (const s of this.stopStrings) {
      for (let len = Math.min(s.length - 1, text.length); len > held; len--) {
        if (text.endsWith(s.slice(0, len))) {
          held = len;
          break;
        }
      }
    }
    return held;
  }

  /**
   * For streaming: the part of the whole generated text that is safe to show now. With a stop string, the
   * text before it (`stop` true); otherwise the text minus what `holdBack` keeps back. Once generation ends
   * without a stop string, show the whole text.
   */
  streamable(fullText: string): TextCheck {
    const found = this.checkText(fullText);
    if (found.stop) return found;
    return { stop: false, text: fullText.slice(0, fullText.length - this.holdBack(fullText)) };
  }
}
