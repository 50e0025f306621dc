/**
 * Splitting a long reply into messages that fit a platform's limit, the way a person would: at paragraphs,
 * else lines, else words, and never inside a code block without closing it and opening it again.
 */

/** A fenced code block (``` or ~~~) that is open: how to close it and how to open it again. */
export interface Fence {
  char: string;
  length: number;
  /** The line that opened it, with its language tag (e.g. "```ts"). */
  opener: string;
}

const FENCE_LINE = /^ {0,3}(`{3,}|~{3,})(.*)$/;

/** What a line does to the fence state `open`: opens a fence, closes the open one, or nothing. @internal */
export function fenceEffect(line: string, open: Fence | null): { opens?: Fence; closes?: true } {
  const m = FENCE_LINE.exec(line);
  if (!m) return {};
  const marker = m[1]!;
  const info = m[2]!;
  if (open) {
    return marker[0] === open.char && marker.length >= open.length && info.trim() === '' ? { closes: true } : {};
  }
  if (marker[0] === '`' && info.includes('`')) return {}; // CommonMark: not a fence, an inline code span
  return { opens: { char: marker[0]!, length: marker.length, opener: line.trimStart().trimEnd() } };
}

const closerOf = (fence: Fence): string => fence.char.repeat(fence.length);

const enum Kind {
  Paragraph,
  Line,
  Word,
}

interface Cut {
  /** The piece is rest.slice(0, end) (trailing whitespace dropped). */
  end: number;
  /** Where the rest continues. */
  next: number;
  /** The fence still open after the piece. */
  state: Fence | null;
}

interface Candidate extends Cut {
  kind: Kind;
  /** The cut ends the line that opened the fence: the chunk would end with an empty code block. */
  afterOpener: boolean;
}

/**
 * Splits `text` into chunks of at most `maxLength` characters. Boundaries: paragraph, then line, then word
 * (a boundary in the second half of the room is preferred over a better kind earlier); a word is cut only when
 * it alone is longer than the room. A code fence open at a cut is closed at the end of the chunk and opened
 * again, with its language tag, at the start of the next. No chunk is empty or only whitespace; `\r\n` becomes
 * `\n`.
 */
export function splitMessage(text: string, maxLength: number): string[] {
  return splitText(text, maxLength, true);
}

/**
 * `splitMessage`, with the choice to keep the last chunk's trailing whitespace: streaming appends new text to
 * the last chunk, which must then be the opened fence (if any) plus an exact suffix of `text`.
 * @internal
 */
export function splitText(text: string, maxLength: number, trimLast: boolean): string[] {
  if (typeof text !== 'string') throw new TypeError(`splitMessage: text must be a string, got ${typeof text}`);
  if (!Number.isInteger(maxLength) || maxLength < 1) {
    throw new RangeError(`splitMessage: maxLength must be a positive integer, got ${String(maxLength)}`);
  }
  const chunks: string[] = [];
  let rest = text.replace(/\r\n?/g, '\n').replace(/^(?:[ \t]*\n)+/, '');
  let open: Fence | null = null;
  while (/\S/.test(rest)) {
    // Too little room to close and reopen this fence: go on as plain text.
    if (open && open.opener.length + 1 + 1 + closerOf(open).length + 1 > maxLength) open = null;
    const head = open ? `${open.opener}\n` : '';
    if (head.length + rest.trimEnd().length <= maxLength) {
      chunks.push(head + (trimLast ? rest.trimEnd() : rest));
      break;
    }
    const cut = chooseCut(rest, head.length, open, maxLength);
    const piece = rest.slice(0, cut.end).trimEnd();
    if (piece) chunks.push(head + piece + (cut.state ? `\n${closerOf(cut.state)}` : ''));
    open = cut.state;
    rest = rest.slice(cut.next);
  }
  return chunks;
}

function chooseCut(rest: string, headLength: number, open: Fence | null, maxLength: number): Cut {
  const room = maxLength - headLength;
  const candidates: Candidate[] = [];
  const lines: { start: number; state: Fence | null }[] = [];
  let state = open;
  let start = 0;
  // Scan the lines that begin within the room; each gives word boundaries and a line boundary at its end.
  while (start <= room && start < rest.length) {
    lines.push({ start, state });
    const nl = rest.indexOf('\n', start);
    const end = nl === -1 ? rest.length : nl;
    const line = rest.slice(start, end);
    const effect = fenceEffect(line, state);
    if (!effect.opens && !effect.closes) {
      // Runs of blanks inside the line (not its indentation) are word boundaries.
      const blanks = /[ \t]+/g;
      for (let m = blanks.exec(line); m; m = blanks.exec(line)) {
        if (m.index === 0) continue;
        if (start + m.index > room) break;
        candidates.push({ end: start + m.index, next: start + m.index + m[0].length, state, kind: Kind.Word, afterOpener: false });
      }
    }
    const after = effect.opens ?? (effect.closes ? null : state);
    if (nl === -1) break;
    if (end <= room) {
      const gap = /\n(?:[ \t]*\n)*/y;
      gap.lastIndex = end;
      gap.exec(rest);
      const next = gap.lastIndex;
      const newlines = rest.slice(end, next).split('\n').length - 1;
      candidates.push({ end, next, state: after, kind: newlines >= 2 ? Kind.Paragraph : Kind.Line, afterOpener: !!effect.opens });
    }
    state = after;
    start = nl + 1;
  }

  const trimmedEnd = (end: number): number => {
    while (end > 0 && /\s/.test(rest[end - 1]!)) end--;
    return end;
  };
  const fits = (c: Cut): boolean => {
    const body = trimmedEnd(c.end);
    return body > 0 && headLength + body + (c.state ? 1 + closerOf(c.state).length : 0) <= maxLength;
  };
  // Awkward cuts leave an empty code block behind: right after a fence opens, or right before it closes.
  const awkward = (c: Candidate): boolean => {
    if (!c.state) return false;
    if (c.afterOpener) return true;
    const nextEnd = rest.indexOf('\n', c.next);
    return fenceEffect(rest.slice(c.next, nextEnd === -1 ? undefined : nextEnd), c.state).closes === true;
  };

  const half = room / 2;
  const passes: ((c: Candidate) => boolean)[] = [
    (c) => c.end >= half && !awkward(c),
    (c) => !awkward(c),
    () => true,
  ];
  for (const pass of passes) {
    for (const kind of [Kind.Paragraph, Kind.Line, Kind.Word]) {
      for (let i = candidates.length - 1; i >= 0; i--) {
        const c = candidates[i]!;
        if (c.kind === kind && pass(c) && fits(c)) return c;
      }
    }
  }

  // No boundary fits: a word (or line of code) longer than the room. Cut it, leaving room to close the fence.
  const lineAt = (pos: number) => {
    let found = lines[0]!;
    for (const l of lines) if (l.start <= pos) found = l;
    return found;
  };
  let end = room;
  let cutState = lineAt(end).state;
  if (cutState) {
    end = room - 1 - closerOf(cutState).length;
    if (end < 1) {
      end = room;
      cutState = null;
    } else {
      cutState = lineAt(end).state;
    }
  }
  end = Math.max(1, end);
  // Never split a surrogate pair.
  const code = rest.charCodeAt(end - 1);
  if (end > 1 && code >= 0xd800 && code <= 0xdbff) end--;
  return { end, next: end, state: cutState };
}

/**
 * The text as a platform shows it mid-stream: blank lines at the start and blanks at the end dropped, and a code
 * fence that is still open closed, so that half a code block renders as code.
 * @internal
 */
export function displayText(text: string): string {
  const visible = text.replace(/\r\n?/g, '\n').replace(/^(?:[ \t]*\n)+/, '').trimEnd();
  const open = openFenceAtEnd(visible);
  return open ? `${visible}\n${closerOf(open)}` : visible;
}

/** Characters `displayText` adds to close the fence open at the end of `text` (0 if none). @internal */
export function closingLength(text: string): number {
  const open = openFenceAtEnd(text);
  return open ? 1 + closerOf(open).length : 0;
}

function openFenceAtEnd(text: string): Fence | null {
  let open: Fence | null = null;
  for (const line of text.split('\n')) {
    const effect = fenceEffect(line, open);
    if (effect.opens) open = effect.opens;
    else if (effect.closes) open = null;
  }
  return open;
}
