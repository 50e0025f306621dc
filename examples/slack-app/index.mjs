// A Slack app answered by a local VIKDF model.
//
//   SLACK_BOT_TOKEN=xoxb-... SLACK_APP_TOKEN=xapp-... node examples/slack-app/index.mjs          Socket Mode
//   SLACK_BOT_TOKEN=xoxb-... SLACK_SIGNING_SECRET=... PORT=3000 node examples/slack-app/index.mjs   HTTP Events API
//
// Optional: SLACK_CHANNELS (comma-separated channel ids to answer in; DMs are always answered), VIKDF_BUNDLE (a
// model bundle directory), VIKDF_SYSTEM (system prompt), HOST (HTTP mode, default 0.0.0.0), SLACK_API_URL (another
// Web API base, e.g. a local test server). See README.md for creating the Slack app.
// Needs the packages built (pnpm install && pnpm build).

const env = process.env;

function fail(message) {
  console.error(`slack-app: ${message}`);
  process.exit(1);
}

// 1. Configuration, checked before anything is loaded.
const botToken = env.SLACK_BOT_TOKEN;
const appToken = env.SLACK_APP_TOKEN;
const signingSecret = env.SLACK_SIGNING_SECRET;
if (!botToken) fail('SLACK_BOT_TOKEN is not set (the Bot User OAuth Token, xoxb-..., from OAuth & Permissions)');
if (!appToken && !signingSecret) {
  fail('set SLACK_APP_TOKEN (xapp-..., for Socket Mode) or SLACK_SIGNING_SECRET (for the HTTP Events API)');
}
const port = env.PORT === undefined ? 3000 : Number(env.PORT);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`PORT must be a port number, got ${JSON.stringify(env.PORT)}`);
const channels = env.SLACK_CHANNELS?.split(',').map((c) => c.trim()).filter(Boolean);

// Loaded after the checks above, so that a missing variable is reported at once.
const { Engine } = await import('@vikdf/core');
const { SlackBot } = await import('@vikdf/slack');

// 2. The model: VIKDF_BUNDLE, else the default model (@vikdf/model-mini).
let engine;
try {
  engine = await Engine.load(env.VIKDF_BUNDLE);
} catch (err) {
  fail(`cannot load the model ${env.VIKDF_BUNDLE ?? '@vikdf/model-mini'}: ${err.message}`);
}
console.log(`model ${engine.manifest.name} (${engine.dir}) on ${engine.provider.device}`);

// 3. The bot.
const bot = new SlackBot({
  engine,
  botToken,
  appToken,
  signingSecret,
  port,
  host: env.HOST,
  slackApiUrl: env.SLACK_API_URL,
  system: env.VIKDF_SYSTEM ?? 'You are a helpful assistant in a Slack workspace. Answer briefly.',
  generation: { numBeams: 1, maxNewTokens: 200 }, // greedy streams token by token
  policy: channels?.length ? { allowChannels: channels } : undefined,
});
bot.on('error', (err) => console.error(`slack-app: ${err.message}`));
bot.on('replied', (msg, reply) => console.log(`answered ${msg.author.id} in ${msg.conversation.channelId}: ${reply.text.length} chars`));

try {
  await bot.start();
} catch (err) {
  await engine.close();
  fail(err.message);
}
console.log(bot.mode === 'socket' ? `connected to Slack (Socket Mode) as ${bot.identity.botUserId}` : `listening on ${bot.url} as ${bot.identity.botUserId}`);

// 4. Ctrl+C / SIGTERM: stop taking events, let the replies under way finish, then unload the model.
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
