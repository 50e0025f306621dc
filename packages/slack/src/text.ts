// Slack's message text format ("mrkdwn" with control sequences) turned into plain text for the model.

const ENTITIES: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>' };

/**
 * Plain text of a Slack message: the bot's own mention (`<@U123>`, `<@U123|name>`) removed, other control
 * sequences made readable (`<@U9|ann>` → `@ann`, `<#C1|general>` → `#general`, `<!here>` → `@here`,
 * `<https://x|label>` → `label (https://x)`), and Slack's three HTML entities unescaped. Trimmed.
 */
export function slackToPlain(text: string, botUserId?: string): string {
  const out = text.replace(/<([^<>\s][^<>]*)>/g, (whole, inner: string) => {
    const [target = '', label] = splitLabel(inner);
    if (target.startsWith('@')) {
      const id = target.slice(1);
      if (botUserId !== undefined && id === botUserId) return '';
      return `@${label ?? id}`;
    }
    if (target.startsWith('#')) return `#${label ?? target.slice(1)}`;
    if (target.startsWith('!')) {
      // <!here>, <!channel>, <!subteam^S1|@team>, <!date^...|fallback>
      if (label !== undefined) return label;
      const word = target.slice(1).split('^')[0] ?? '';
      return `@${word}`;
    }
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) {
      if (label === undefined || label === target) return target;
      return `${label} (${target})`;
    }
    return whole;
  });
  return unescapeSlack(out)
    .replace(/[ \t]{2,}/g, ' ')
    .trim();
}

/** True if the text mentions this user (`<@U123>` or `<@U123|name>`). */
export function mentions(text: string, userId: string): boolean {
  return text.includes(`<@${userId}>`) || text.includes(`<@${userId}|`);
}

export function unescapeSlack(text: string): string {
  return text.replace(/&(?:amp|lt|gt);/g, (e) => ENTITIES[e] ?? e);
}

function splitLabel(inner: string): [string, string | undefined] {
  const bar = inner.indexOf('|');
  return bar < 0 ? [inner, undefined] : [inner.slice(0, bar), inner.slice(bar + 1)];
}
