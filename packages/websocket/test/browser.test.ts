/// <reference lib="dom" />
// The chat page in headless Chromium (from the npm package @sparticuz/chromium, driven by playwright-core: no
// root, no apt): it loads, shows the model and the device, streams a reply, stops one, resets, and signs in
// with a token. No silent skip: when the browser cannot start, every test here fails and says why.
import type { Engine } from '@vikdf/core';
import type { Page } from '@vikdf/test-support';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ServerOptions } from '../src/index.js';
import { closeAll, loadEngine, startServer, useChatPages, type ChatPage } from './helpers.js';

let engine: Engine;
beforeAll(async () => {
  engine = await loadEngine();
});
const pages = useChatPages();
afterEach(async () => {
  await closeAll();
});
afterAll(async () => {
  await engine.close();
});

async function open(options: Omit<ServerOptions, 'engine'>): Promise<ChatPage> {
  const opened = await pages.newPage();
  const server = await startServer({ engine, ...options });
  await opened.page.goto(server.url);
  return opened;
}

const text = (page: Page, selector: string) => page.locator(selector).textContent({ timeout: 15_000 });

async function waitForStatus(page: Page, status: string): Promise<void> {
  await page.waitForFunction((s) => document.getElementById('status')?.textContent === s, status, { timeout: 15_000 });
}

/** Records every text the last bot bubble shows, to tell a streamed reply from one shown at once. */
async function recordBotTexts(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { botTexts: string[] };
    w.botTexts = [];
    new MutationObserver(() => {
      const bots = document.querySelectorAll('.msg.bot .text');
      const last = bots[bots.length - 1];
      if (last && last.textContent && last.textContent !== w.botTexts[w.botTexts.length - 1]) w.botTexts.push(last.textContent);
    }).observe(document.getElementById('messages')!, { subtree: true, childList: true, characterData: true });
  });
}

async function say(page: Page, message: string): Promise<void> {
  await page.fill('#input', message);
  await page.press('#input', 'Enter');
}

describe('the chat page in headless Chromium', () => {
  it('loads, shows the model and the device, and streams a reply', async () => {
    const { page, frames, problems } = await open({ defaults: { numBeams: 1, maxNewTokens: 40 } });
    expect(await page.title()).toBe('VIKDF chat');
    await waitForStatus(page, 'connected');
    expect(await text(page, '#model')).toBe('tiny-random');
    expect(await text(page, '#device')).toBe('cpu');
    await recordBotTexts(page);
    await say(page, 'hello there, what do you see?');
    await page.waitForSelector('.msg.bot[data-finish]', { timeout: 30_000 });
    expect(await text(page, '.msg.user .text')).toBe('hello there, what do you see?');

    const done = frames.find((f) => f.type === 'done')!;
    const tokens = frames.filter((f) => f.type === 'token');
    expect(done).toBeDefined();
    expect(tokens.length).toBeGreaterThan(1);
    expect(tokens.map((t) => t.text).join('')).toBe(done.text);
    const shown = await text(page, '.msg.bot .text');
    expect(shown).toBe(done.text);
    expect(await page.getAttribute('.msg.bot', 'data-finish')).toBe(done.finishReason);
    expect(await text(page, '.msg.bot .meta')).toMatch(/^\d+ tokens · \d+ ms · (length|eos)$/);
    // streamed: the bubble showed growing prefixes of the reply before the whole of it
    const seen = await page.evaluate(() => (window as unknown as { botTexts: string[] }).botTexts);
    expect(seen.length).toBeGreaterThan(1);
    for (const s of seen) expect((done.text as string).startsWith(s)).toBe(true);
    expect(seen[0]!.length).toBeLessThan((done.text as string).length);
    expect(problems).toEqual([]);
  });

  it('stops a reply, resets the conversation, and answers again', async () => {
    const { page, frames, problems } = await open({ defaults: { numBeams: 1, maxNewTokens: 250, minNewTokens: 250 } });
    await waitForStatus(page, 'connected');
    await say(page, 'tell me a long story');
    await page.waitForFunction(() => (document.querySelector('.msg.bot .text')?.textContent ?? '').length > 0, undefined, { timeout: 15_000 });
    await page.click('#stop');
    await page.waitForSelector('.msg.bot[data-finish]', { timeout: 30_000 });
    expect(await page.getAttribute('.msg.bot', 'data-finish')).toBe('aborted');
    expect(frames.some((f) => f.type === 'done' && f.finishReason === 'aborted')).toBe(true);

    await page.click('#reset');
    await page.waitForFunction(() => document.querySelector('#messages .note')?.textContent === 'Conversation reset.', undefined, { timeout: 15_000 });
    expect(await page.locator('.msg').count()).toBe(0);
    expect(frames.some((f) => f.type === 'reset_ok')).toBe(true);

    await say(page, 'hello again');
    await page.waitForSelector('.msg.bot[data-finish]', { timeout: 30_000 });
    expect(await page.getAttribute('.msg.bot', 'data-finish')).toBe('length');
    expect(problems).toEqual([]);
  });

  it('asks for the token when the server needs one', async () => {
    const { page, problems } = await open({ token: 'page-token', defaults: { numBeams: 1, maxNewTokens: 8 } });
    await waitForStatus(page, 'token needed');
    expect(await page.isVisible('#auth')).toBe(true);
    await page.fill('#token', 'page-token');
    await page.click('#auth button');
    await waitForStatus(page, 'connected');
    expect(await page.isVisible('#auth')).toBe(false);
    await say(page, 'hello');
    await page.waitForSelector('.msg.bot[data-finish]', { timeout: 30_000 });
    expect(await page.getAttribute('.msg.bot', 'data-finish')).toBe('length');
    expect(problems).toEqual([]);
  });
});
