export { DEFAULT_INTENTS, DiscordBot } from './bot.js';
export type { DiscordBotEvents, DiscordBotOptions } from './bot.js';
export { PLATFORM, addressedBy, messageText, toInbound } from './normalize.js';
export { DISCORD_MAX_LENGTH, channelOutbox, fetchHistory } from './outbox.js';
export type { ChannelOutboxOptions } from './outbox.js';
