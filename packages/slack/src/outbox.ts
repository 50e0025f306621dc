// The kit's Outbox for one Slack reply: chat.postMessage for new messages, chat.update for edits, all in one thread.
import type { Outbox, SentRef } from '@vikdf/adapter-kit';
import type { webApi } from '@slack/bolt';

export interface SlackOutboxOptions {
  channel: string;
  /** The thread replies go to; undefined posts at the top level of the channel (a DM outside a thread). */
  threadTs: string | undefined;
  /** Markdown → the text Slack receives (mrkdwn by default). */
  format: (markdown: string) => string;
  maxLength: number;
}

export class SlackOutbox implements Outbox {
  readonly maxLength: number;

  constructor(
    private readonly client: webApi.WebClient,
    private readonly opts: SlackOutboxOptions,
  ) {
    this.maxLength = opts.maxLength;
  }

  async send(text: string): Promise<SentRef> {
    const res = await this.client.chat.postMessage({
      channel: this.opts.channel,
      text: this.render(text),
      ...(this.opts.threadTs !== undefined ? { thread_ts: this.opts.threadTs } : {}),
      // Link previews would flicker on every streamed edit.
      unfurl_links: false,
      unfurl_media: false,
    });
    if (!res.ts) throw new Error('chat.postMessage returned no ts');
    return { id: res.ts, channel: res.channel ?? this.opts.channel };
  }

  async edit(ref: SentRef, text: string): Promise<void> {
    const channel = typeof ref.channel === 'string' ? ref.channel : this.opts.channel;
    await this.client.chat.update({ channel, ts: ref.id, text: this.render(text) });
  }

  private render(text: string): string {
    const out = this.opts.format(text);
    // Slack refuses an empty text (no_text); a lone space would render as nothing too.
    return out.trim() === '' ? '…' : out;
  }
}
