/**
 * discord.js messages to the kit's InboundMessage: who wrote it, where, how it addressed the bot, and its text
 * without the bot's mention.
 */
import type { AddressedBy, InboundMessage } from '@vikdf/adapter-kit';
import { ChannelType, cleanContent, type Message } from 'discord.js';

export const PLATFORM = 'discord';

/** The ids that mention the bot in a message: its user, and its managed role (people often pick the role). */
function botRoleIds(message: Message, botId: string): string[] {
  return [...message.mentions.roles.values()].filter((role) => role.tags?.botId === botId).map((role) => role.id);
}

/** `content` without mentions of the bot, other mentions made readable (`@name`, `#channel`), trimmed. */
export function messageText(message: Message, botId: string): string {
  let content = message.content.replace(new RegExp(`<@!?${botId}>`, 'g'), ' ');
  for (const roleId of botRoleIds(message, botId)) content = content.replaceAll(`<@&${roleId}>`, ' ');
  return cleanContent(content, message.channel)
    .replace(/[ \t]{2,}/g, ' ')
    .trim();
}

export function addressedBy(message: Message, botId: string): AddressedBy {
  if (isDM(message)) return 'dm';
  if (new RegExp(`<@!?${botId}>`).test(message.content) || botRoleIds(message, botId).length > 0) return 'mention';
  if (message.mentions.repliedUser?.id === botId) return 'reply';
  return 'none';
}

function isDM(message: Message): boolean {
  return message.channel.type === ChannelType.DM || message.guildId === null;
}

/**
 * The InboundMessage of a discord.js message. A thread's conversation is the thread (`threadId`) inside its
 * parent channel (`channelId`), so channel allow-lists cover their threads.
 */
export function toInbound(message: Message, botId: string): InboundMessage<Message> {
  const channel = message.channel;
  const thread = channel.isThread() ? channel : undefined;
  const dm = isDM(message);
  return {
    platform: PLATFORM,
    id: message.id,
    conversation: {
      platform: PLATFORM,
      channelId: thread?.parentId ?? channel.id,
      ...(thread ? { threadId: thread.id } : {}),
      isDM: dm,
    },
    author: {
      id: message.author.id,
      name: message.member?.displayName ?? message.author.globalName ?? message.author.username,
      isBot: message.author.bot,
      isSelf: message.author.id === botId,
    },
    text: messageText(message, botId),
    addressedBy: addressedBy(message, botId),
    attachments: [...message.attachments.values()].map((a) => ({
      name: a.name,
      url: a.url,
      ...(a.contentType ? { contentType: a.contentType } : {}),
      size: a.size,
    })),
    raw: message,
  };
}
