/**
 * Markdown (what models write) to Slack's mrkdwn, where the two differ. Code is left as written.
 */
import { fenceEffect, type Fence } from './split.js';

// Private-use characters never produced by the conversions; they hold places for protected pieces.
const SLOT_OPEN = '\uE000';
const SLOT_CLOSE = '\uE001';
const BOLD = '\uE002'; // a Slack bold asterisk, kept apart from Markdown's asterisks until the end

/**
 * `**b**`/`__b__` → `*b*`, `*i*`/`_i_` → `_i_`, `***bi***` → `*_bi_*`, `~~s~~` → `~s~`, `[t](u)` → `<u|t>`,
 * `![alt](u)` → `<u|alt>`, `<https://…>` kept as a link, `# heading` → `*heading*`, `-`/`*`/`+` bullets → `•`;
 * `&`, `<` and `>` escaped outside code (a `>` that starts a quote stays); code spans and fences untouched.
 */
export function markdownToMrkdwn(md: string): string {
  if (typeof md !== 'string') throw new TypeError(`markdownToMrkdwn: expected a string, got ${typeof md}`);
  const slots: string[] = [];
  const keep = (text: string) => `${SLOT_OPEN}${slots.push(text) - 1}${SLOT_CLOSE}`;
  let s = md.replace(/\r\n?/g, '\n').replace(/[\uE000-\uE002]/g, '');

  // 1. Code: fenced blocks (to their closing fence, or the end), then inline spans.
  const out: string[] = [];
  let block: string[] | undefined;
  let fence: Fence | null = null;
  for (const line of s.split('\n')) {
    const effect = fenceEffect(line, fence);
    if (fence) {
      block!.push(line);
      if (effect.closes) {
        out.push(keep(block!.join('\n')));
        fence = null;
      }
    } else if (effect.opens) {
      fence = effect.opens;
      block = [line];
    } else {
      out.push(line);
    }
  }
  if (fence) out.push(keep(block!.join('\n')));
  s = out.join('\n');
  s = s.replace(/(`+)([^`\n]|[^`\n][^\n]*?[^`\n])\1(?!`)/g, (span) => keep(span));

  // 2. Links: inline links and images, and autolinks, become Slack links.
  s = s.replace(/!?\[([^\]\n]*)\]\(\s*<?([^\s)>]+)>?(?:\s+"[^"\n]*")?\s*\)/g, (_m, label: string, url: string) => {
    const text = inline(escapeText(label.trim())).replaceAll(BOLD, '*');
    return keep(text && text !== url ? `<${escapeUrl(url)}|${text}>` : `<${escapeUrl(url)}>`);
  });
  s = s.replace(/<((?:https?|mailto):[^\s<>]+)>/g, (_m, url: string) => keep(`<${escapeUrl(url)}>`));

  // 3. Escaping, then the block-level and inline conversions on the plain text.
  s = s
    .split('\n')
    .map((line) => {
      const quote = /^((?: {0,3}>[ \t]?)+)/.exec(line)?.[1] ?? ''; // quotes read the same in mrkdwn
      let body = escapeText(line.slice(quote.length));
      const heading = /^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/.exec(body);
      if (heading) {
        const title = inline(heading[1]!).replaceAll(BOLD, '');
        body = title ? `${BOLD}${title}${BOLD}` : '';
      } else {
        body = body.replace(/^([ \t]*)[-*+][ \t]+(?=\S)/, '$1• ');
        body = inline(body);
      }
      return quote + body;
    })
    .join('\n');

  s = s.replaceAll(BOLD, '*');
  return s.replace(new RegExp(`${SLOT_OPEN}(\\d+)${SLOT_CLOSE}`, 'g'), (_m, i: string) => slots[Number(i)]!);
}

/** Inline emphasis of one line (already escaped): Markdown's bold, italics and strikethrough in Slack's marks. */
function inline(text: string): string {
  return text
    .replace(/\*\*\*(?=\S)([^*\n]*?\S)\*\*\*/g, `${BOLD}_$1_${BOLD}`)
    .replace(/\*\*(?=\S)(.*?\S)\*\*/g, `${BOLD}$1${BOLD}`)
    .replace(/(^|[^\w])__(?=\S)(.*?\S)__(?!\w)/g, `$1${BOLD}$2${BOLD}`)
    .replace(/(^|[^\w*])\*([^\s*](?:[^*\n]*?[^\s*])?)\*(?![\w*])/g, '$1_$2_')
    .replace(/~~(?=\S)(.*?\S)~~/g, '~$1~');
}

function escapeText(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

/** A URL inside `<…|…>`: `|` and `>` would end it early. */
function escapeUrl(url: string): string {
  return url.replaceAll('&', '&amp;').replaceAll('<', '%3C').replaceAll('>', '%3E').replaceAll('|', '%7C');
}
