/**
 * The kit's Outbox on a Discord channel, and the channel's history as context.
 */
import { randomBytes } from 'node:crypto';
import type { Outbox, SentRef } from '@vikdf/adapter-kit';
import type { Message, SendableChannels } from 'discord.js';
import { messageText } from './normalize.js';

/** Discord's limit on a message's content. */
export const DISCORD_MAX_LENGTH = 2000;

export interface ChannelOutboxOptions {
  /** Notify the author when replying to them (default true). Other mentions in replies never ping. */
  mentionOnReply?: boolean;
}

/**
 * Sends, edits and types in `channel`. Model text never pings anyone (`@everyone`, roles and users are
 * shown, not notified); only the reply reference may notify the person asked. Rate limits (429) are waited
 * out and retried by discord.js's REST queue, and so are 5xx. Each send carries a nonce that Discord enforces
 * (`enforce_nonce`): when a send is retried after Discord created the message but failed to answer (a 502 on
 * the way back), Discord returns that message instead of posting it twice.
 */
export function channelOutbox(channel: SendableChannels, opts: ChannelOutboxOptions = {}): Outbox {
  const repliedUser = opts.mentionOnReply ?? true;
  return {
    maxLength: DISCORD_MAX_LENGTH,
    async send(text, { replyTo }): Promise<SentRef> {
      const sent = await channel.send({
        content: text,
        nonce: newNonce(),
        enforceNonce: true,
        allowedMentions: { parse: [], repliedUser },
        ...(replyTo ? { reply: { messageReference: replyTo, failIfNotExists: false } } : {}),
      });
      return { id: sent.id, channelId: sent.channelId };
    },
    async edit(ref, text): Promise<void> {
      await channel.messages.edit(ref.id, { content: text, allowedMentions: { parse: [], repliedUser } });
    },
    async typing(): Promise<void> {
      await channel.sendTyping();
    },
  };
}

/** A nonce for one send: Discord takes up to 25 characters. */
function newNonce(): string {
  return randomBytes(12).toString('base64url').slice(0, 16);
}

/**
 * Up to `limit` messages before `message` in its channel or thread, oldest first, as text (bot mentions
 * removed, blank ones dropped). In a thread started from a message, that starter message comes first.
 */
export async function fetchHistory(message: Message, botId: string, limit: number): Promise<string[]> {
  const channel = message.channel;
  const fetched = await channel.messages.fetch({ limit, before: message.id, cache: false });
  const earlier = [...fetched.values()].sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
  if (channel.isThread()) {
    const starter = await channel.fetchStarterMessage().catch(() => null); // absent for threads not started from a message
    if (starter && !earlier.some((m) => m.id === starter.id)) earlier.unshift(starter);
  }
  return earlier.map((m) => messageText(m, botId)).filter((text) => text !== '');
}
