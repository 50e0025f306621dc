// Slack events (app_mention, message) normalised to the adapter kit's InboundMessage.
import type { AddressedBy, Attachment, InboundMessage } from '@vikdf/adapter-kit';
import { mentions, slackToPlain } from './text.js';

/** The fields of a Slack `app_mention` / `message` event that the adapter reads. */
export interface SlackMessageEvent {
  type: string;
  subtype?: string;
  channel?: string;
  channel_type?: string;
  user?: string;
  username?: string;
  bot_id?: string;
  text?: string;
  ts?: string;
  thread_ts?: string;
  files?: { name?: string; title?: string; url_private?: string; mimetype?: string; size?: number }[];
  [key: string]: unknown;
}

export interface SlackIdentity {
  botUserId: string;
  botId?: string;
}

// Message subtypes that carry a new message from someone. Edits, deletions, joins and the like are not answered.
const ANSWERABLE_SUBTYPES = new Set([undefined, 'file_share', 'thread_broadcast', 'bot_message', 'me_message']);

export function isDirectChannel(event: SlackMessageEvent): boolean {
  if (event.channel_type !== undefined) return event.channel_type === 'im';
  return event.channel?.startsWith('D') ?? false; // app_mention events carry no channel_type
}

/**
 * The thread a reply to this event goes to: the event's thread, or a new thread under the message itself.
 * Direct messages outside a thread are answered in the DM itself unless `threadDMs`.
 */
export function replyThreadTs(event: SlackMessageEvent, threadDMs: boolean): string | undefined {
  if (event.thread_ts) return event.thread_ts;
  if (isDirectChannel(event) && !threadDMs) return undefined;
  return event.ts;
}

export interface NormaliseOptions {
  identity: SlackIdentity;
  threadDMs: boolean;
  /** Whether the bot has answered in this thread before (a plain message there counts as a reply to it). */
  isKnownThread?: (channel: string, threadTs: string) => boolean;
}

/**
 * The InboundMessage for a Slack event, or a reason why the event is not a message to consider at all
 * (edits, deletions, joins, events without a channel or ts).
 */
export function normaliseEvent(event: SlackMessageEvent, opts: NormaliseOptions): InboundMessage<SlackMessageEvent> | { skip: string } {
  if (!ANSWERABLE_SUBTYPES.has(event.subtype)) return { skip: `subtype ${event.subtype}` };
  if (!event.channel || !event.ts) return { skip: 'event without channel or ts' };
  const { botUserId, botId } = opts.identity;
  const raw = event.text ?? '';
  const isDM = isDirectChannel(event);
  const threadTs = replyThreadTs(event, opts.threadDMs);
  const isSelf = (event.user !== undefined && event.user === botUserId) || (botId !== undefined && event.bot_id === botId);
  const isBot = isSelf || event.bot_id !== undefined || event.subtype === 'bot_message';

  let addressedBy: AddressedBy = 'none';
  if (event.type === 'app_mention' || mentions(raw, botUserId)) addressedBy = 'mention';
  else if (isDM) addressedBy = 'dm';
  else if (event.thread_ts && opts.isKnownThread?.(event.channel, event.thread_ts)) addressedBy = 'reply';

  const attachments: Attachment[] = (event.files ?? [])
    .filter((f) => typeof f.url_private === 'string')
    .map((f) => ({
      name: f.name ?? f.title ?? 'file',
      url: f.url_private as string,
      ...(f.mimetype !== undefined ? { contentType: f.mimetype } : {}),
      ...(f.size !== undefined ? { size: f.size } : {}),
    }));

  return {
    platform: 'slack',
    id: event.ts,
    conversation: { platform: 'slack', channelId: event.channel, ...(threadTs !== undefined ? { threadId: threadTs } : {}), isDM },
    author: { id: event.user ?? event.bot_id ?? 'unknown', name: event.username ?? event.user ?? event.bot_id ?? 'unknown', isBot, isSelf },
    text: slackToPlain(raw, botUserId),
    addressedBy,
    attachments,
    raw: event,
  };
}
