/**
 * The platform-neutral inbound message: what every adapter turns its platform's events into.
 */

/** How the message addressed the bot: an @mention, a reply to one of its messages, a direct message, or not at all. */
export type AddressedBy = 'mention' | 'reply' | 'dm' | 'none';

export const ADDRESSED_BY: readonly AddressedBy[] = ['mention', 'reply', 'dm', 'none'];

/**
 * Where a message lives: a channel, a thread in a channel, or a direct-message channel. `channelId` is the
 * channel a thread belongs to (so allow-lists of channels cover their threads); `threadId` names the thread.
 */
export interface ConversationRef {
  platform: string;
  channelId: string;
  threadId?: string;
  isDM: boolean;
}

/** The key of a conversation: `platform:channelId:threadId` (threadId empty outside threads). */
export function conversationKey(ref: ConversationRef): string {
  return `${ref.platform}:${ref.channelId}:${ref.threadId ?? ''}`;
}

export interface Attachment {
  name: string;
  url: string;
  contentType?: string;
  size?: number;
}

export interface InboundMessage<Raw = unknown> {
  platform: string;
  /** The platform's message id (with platform and channel, the dedupe key). */
  id: string;
  conversation: ConversationRef;
  author: { id: string; name: string; isBot: boolean; isSelf: boolean };
  /** The text with the bot's mention removed, trimmed. */
  text: string;
  addressedBy: AddressedBy;
  attachments: Attachment[];
  /** The platform's own object, for handlers that need more. */
  raw?: Raw;
}

/** The dedupe key of a message: `platform:channelId:id`. */
export function messageKey(msg: InboundMessage): string {
  return `${msg.platform}:${msg.conversation.channelId}:${msg.id}`;
}
