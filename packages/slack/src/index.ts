export { SlackBot, compareTs } from './bot.js';
export type { SlackBotEvents, SlackBotOptions, SlackMode } from './bot.js';
export { SlackOutbox } from './outbox.js';
export type { SlackOutboxOptions } from './outbox.js';
export { isDirectChannel, normaliseEvent, replyThreadTs } from './events.js';
export type { NormaliseOptions, SlackIdentity, SlackMessageEvent } from './events.js';
export { mentions, slackToPlain, unescapeSlack } from './text.js';
