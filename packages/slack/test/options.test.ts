// Configuration errors: missing or swapped tokens and secrets fail at once with a message that says what to set.
import { afterEach, describe, expect, it } from 'vitest';
import { SlackBot } from '../src/index.js';
import { APP_TOKEN, BOT_TOKEN, RecordingLogger, ScriptedResponder, SIGNING_SECRET, closeAll, startFake } from './helpers.js';

afterEach(closeAll);

const responder = new ScriptedResponder();

describe('SlackBot options', () => {
  it('needs a bot token', () => {
    expect(() => new SlackBot({ responder, botToken: '', appToken: APP_TOKEN })).toThrow(/botToken is missing.*SLACK_BOT_TOKEN/);
    expect(() => new SlackBot({ responder, appToken: APP_TOKEN } as never)).toThrow(/botToken is missing/);
    expect(() => new SlackBot({ responder, botToken: APP_TOKEN, appToken: APP_TOKEN })).toThrow(/app-level token/);
  });

  it('needs an app token (Socket Mode) or a signing secret (HTTP)', () => {
    expect(() => new SlackBot({ responder, botToken: BOT_TOKEN })).toThrow(/SLACK_APP_TOKEN.*SLACK_SIGNING_SECRET/);
    expect(() => new SlackBot({ responder, botToken: BOT_TOKEN, mode: 'socket', signingSecret: SIGNING_SECRET })).toThrow(/Socket Mode needs appToken/);
    expect(() => new SlackBot({ responder, botToken: BOT_TOKEN, mode: 'http', appToken: APP_TOKEN })).toThrow(/needs signingSecret/);
    expect(() => new SlackBot({ responder, botToken: BOT_TOKEN, appToken: BOT_TOKEN })).toThrow(/xapp-/);
    expect(() => new SlackBot({ responder, botToken: BOT_TOKEN, appToken: APP_TOKEN, mode: 'rtm' as never })).toThrow(/unknown mode/);
  });

  it('picks the mode from what is given', () => {
    expect(new SlackBot({ responder, botToken: BOT_TOKEN, appToken: APP_TOKEN }).mode).toBe('socket');
    expect(new SlackBot({ responder, botToken: BOT_TOKEN, signingSecret: SIGNING_SECRET }).mode).toBe('http');
    expect(new SlackBot({ responder, botToken: BOT_TOKEN, appToken: APP_TOKEN, signingSecret: SIGNING_SECRET }).mode).toBe('socket');
    expect(new SlackBot({ responder, botToken: BOT_TOKEN, appToken: APP_TOKEN, signingSecret: SIGNING_SECRET, mode: 'http' }).mode).toBe('http');
  });

  it('needs an engine or a responder, and sane numbers', () => {
    expect(() => new SlackBot({ botToken: BOT_TOKEN, appToken: APP_TOKEN })).toThrow(/engine .* or a responder/);
    expect(() => new SlackBot({ responder, botToken: BOT_TOKEN, appToken: APP_TOKEN, editIntervalMs: -1 })).toThrow(/editIntervalMs/);
    expect(() => new SlackBot({ responder, botToken: BOT_TOKEN, appToken: APP_TOKEN, maxMessageLength: 10 })).toThrow(/maxMessageLength/);
  });

  it('fails start() clearly when Slack rejects the bot token', async () => {
    const fake = await startFake();
    const bot = new SlackBot({ responder, botToken: 'xoxb-revoked', appToken: APP_TOKEN, slackApiUrl: fake.apiUrl, clientOptions: { retryConfig: { retries: 0 } }, logger: new RecordingLogger() });
    await expect(bot.start()).rejects.toThrow(/auth\.test failed.*invalid_auth/);
    expect(fake.callsTo('apps.connections.open')).toEqual([]);
    await expect(bot.start()).rejects.toThrow(/already called/);
    await bot.stop();
  });

  it('fails start() clearly when Slack rejects the app token', async () => {
    const fake = await startFake();
    const bot = new SlackBot({
      responder,
      botToken: BOT_TOKEN,
      appToken: 'xapp-revoked',
      slackApiUrl: fake.apiUrl,
      clientOptions: { retryConfig: { retries: 0 } },
      logger: new RecordingLogger(),
    });
    fake.rejectAppTokens = true;
    await expect(bot.start()).rejects.toThrow(/Socket Mode connection: invalid_auth/);
    await bot.stop();
  });
});
