// A Discord bot answered by a local VIKDF model.
//
//   DISCORD_TOKEN=... node examples/discord-bot/index.mjs        (or: pnpm --filter @vikdf/example-discord-bot start)
//
// Optional: DISCORD_CHANNELS (comma-separated channel ids to answer in; threads count by their channel; DMs are
// answered unless DISCORD_DMS=off), VIKDF_BUNDLE (a model bundle directory), VIKDF_SYSTEM (system prompt),
// DISCORD_API_URL (another REST API base, e.g. a local test server). README.md says how to create the bot.
// Needs the packages built (pnpm install && pnpm build).

const env = process.env;

function fail(message) {
  console.error(`discord-bot: ${message}`);
  process.exit(1);
}

// 1. Configuration, checked before the model loads.
const token = env.DISCORD_TOKEN?.trim();
if (!token) fail('DISCORD_TOKEN is not set (the bot token from the Discord developer portal: your application > Bot > Reset Token)');
const channels = env.DISCORD_CHANNELS?.split(',').map((c) => c.trim()).filter(Boolean);
if (channels?.some((c) => !/^\d{17,20}$/.test(c))) fail(`DISCORD_CHANNELS must be channel ids (numbers), got ${JSON.stringify(env.DISCORD_CHANNELS)}`);
const dms = (env.DISCORD_DMS ?? 'on').toLowerCase();
if (!['on', 'off'].includes(dms)) fail(`DISCORD_DMS must be on or off, got ${JSON.stringify(env.DISCORD_DMS)}`);

const { Engine } = await import('@vikdf/core');
const { DiscordBot } = await import('@vikdf/discord');

// 2. The model: VIKDF_BUNDLE, else the default model (@vikdf/model-mini).
const bundle = env.VIKDF_BUNDLE;
let engine;
try {
  engine = await Engine.load(bundle);
} catch (err) {
  fail(`cannot load the model ${bundle ?? '@vikdf/model-mini'}: ${err.message}`);
}
console.log(`model ${engine.manifest.name} (${engine.dir}) on ${engine.provider.device}`);

// 3. The bot: mentions, replies to it and DMs; greedy decoding streams token by token.
const bot = new DiscordBot({
  token,
  engine,
  system: env.VIKDF_SYSTEM ?? 'You are a helpful assistant on a Discord server. Answer briefly.',
  generation: { numBeams: 1, maxNewTokens: 200 },
  policy: { ...(channels?.length ? { allowChannels: channels } : {}), allowDMs: dms === 'on' },
  ...(env.DISCORD_API_URL ? { clientOptions: { rest: { api: env.DISCORD_API_URL } } } : {}),
});
bot.on('error', (err) => console.error(`discord-bot: ${err.message}`));
bot.on('replied', (msg, reply) => console.log(`answered ${msg.author.name} in ${msg.conversation.channelId}: ${reply.text.length} chars`));
bot.on('reconnecting', () => console.log('gateway connection lost; reconnecting'));
bot.on('resumed', () => console.log('gateway session resumed'));

try {
  await bot.start();
} catch (err) {
  await engine.close();
  fail(`${err.message} (check DISCORD_TOKEN, and that "Message Content Intent" is enabled on the Bot page)`);
}
console.log(`logged in as ${bot.client.user.tag}; mention it, reply to it or DM it`);

// 4. Ctrl+C / SIGTERM: stop answering, disconnect, unload the model.
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    if (stopping) process.exit(130); // a second Ctrl+C: leave now
    stopping = true;
    console.log('stopping ...');
    await bot.stop();
    await engine.close();
    process.exit(0);
  });
}
