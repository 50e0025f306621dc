/// <reference lib="dom" />
// The chat page's resumable conversation in headless Chromium (useChatPages in ./helpers.ts): the
// token kept in sessionStorage, the conversation restored after a reload and resumed after a dropped connection,
// and plain words when a reply was lost or the history could not be resumed. The page is reached through a TCP
// proxy, so that a test can cut the connection as a network failure or a killed server would.
import type { Page } from '@vikdf/test-support';
import { describe, expect, it } from 'vitest';
import type { VikdfServer } from '../src/index.js';
import { tcpProxy, useChatPages, withTinyEngine, type TcpProxy } from './helpers.js';

const tiny = withTinyEngine();
// The tests cut connections on purpose: Chromium's errors about those are expected, not problems.
const pages = useChatPages(/WebSocket connection .* failed|ERR_CONNECTION/);

interface Opened {
  page: Page;
  server: VikdfServer;
  /** Frames the page received, over all its WebSockets. */
  frames: Record<string, unknown>[];
  problems: string[];
  proxy: TcpProxy;
  serve(port?: number): Promise<VikdfServer>;
}

/** The page of a server on the tiny engine, reached through a proxy (the server answers the proxy's address too). */
async function open(defaults: object = { numBeams: 1, maxNewTokens: 8 }): Promise<Opened> {
  const proxy = await tcpProxy();
  const serve = async (port = 0) => {
    const s = await tiny.serve({ port, defaults, allowedHosts: [`127.0.0.1:${proxy.port}`] });
    proxy.target = s.address.port;
    return s;
  };
  const server = await serve();
  const { page, frames, problems } = await pages.newPage();
  await page.goto(`http://127.0.0.1:${proxy.port}/`);
  return { page, server, frames, problems, proxy, serve };
}

async function waitForStatus(page: Page, status: string | RegExp): Promise<void> {
  const source = status instanceof RegExp ? status.source : `^${status.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
  await page.waitForFunction((s) => new RegExp(s).test(document.getElementById('status')?.textContent ?? ''), source, { timeout: 15_000 });
}

async function say(page: Page, message: string): Promise<void> {
  await page.fill('#input', message);
  await page.press('#input', 'Enter');
}

/** Waits for the n-th finished bot bubble (1-based) and returns its finish attribute. */
async function nthReply(page: Page, n: number): Promise<string | null> {
  await page.waitForFunction((k) => document.querySelectorAll('.msg.bot[data-finish]').length >= k, n, { timeout: 30_000 });
  return page.locator('.msg.bot[data-finish]').nth(n - 1).getAttribute('data-finish');
}

const notes = (page: Page) => page.locator('#messages .note').allTextContents();
const lastPrompt = (frames: Record<string, unknown>[]) =>
  (frames.filter((f) => f.type === 'done').at(-1)!.usage as { promptTokens: number }).promptTokens;

describe('the chat page resumes its conversation', () => {
  it('keeps the token in sessionStorage; a reload restores the conversation, which the bot still remembers', async () => {
    const { page, frames, problems } = await open();
    await waitForStatus(page, 'connected');
    await say(page, 'hello there');
    expect(await nthReply(page, 1)).toMatch(/^(length|eos)$/);
    const first = lastPrompt(frames);
    const token = frames.find((f) => f.type === 'conversation')!.token;
    expect(await page.evaluate(() => sessionStorage.getItem('vikdf-chat:conversation'))).toBe(token);

    await page.reload();
    await waitForStatus(page, 'connected');
    expect(await notes(page)).toEqual(['Conversation restored: the bot remembers these 2 turns.']);
    expect(await page.locator('.msg.user .text').allTextContents()).toEqual(['hello there']);
    expect(await page.locator('.msg.bot').count()).toBe(1);
    await say(page, 'hello there');
    expect(await nthReply(page, 2)).toMatch(/^(length|eos)$/);
    expect(lastPrompt(frames)).toBeGreaterThan(first); // the reply saw the earlier turns
    expect(problems).toEqual([]);
  });

  it('says a reply was lost when the connection drops mid-reply, and that the conversation goes on after reconnecting', async () => {
    const { page, frames, problems, proxy } = await open({ numBeams: 1, maxNewTokens: 250, minNewTokens: 250 });
    await waitForStatus(page, 'connected');
    await say(page, 'tell me a long story');
    await page.waitForFunction(() => (document.querySelector('.msg.bot .text')?.textContent ?? '').length > 0, undefined, { timeout: 15_000 });
    proxy.drop(); // the network fails: no close frame, no done frame
    expect(await nthReply(page, 1)).toBe('error');
    expect(await page.locator('.msg.bot .meta').first().textContent()).toMatch(/^reply lost: the connection closed \(1006\) before it finished$/);
    await waitForStatus(page, /^disconnected/);
    await say(page, 'hello again');
    await page.waitForFunction(() => [...document.querySelectorAll('#messages .note')].some((n) => n.textContent?.startsWith('Reconnected')), undefined, {
      timeout: 15_000,
    });
    expect((await notes(page)).at(-1)).toBe('Reconnected: the conversation goes on (the server kept its 2 turns).');
    await page.click('#stop');
    expect(await nthReply(page, 2)).toBe('aborted');
    expect(frames.filter((f) => f.type === 'conversation').map((f) => f.resumed)).toEqual([false, true]);
    expect(problems).toEqual([]);
  });

  it('says plainly when the conversation could not be resumed (the server restarted)', async () => {
    const { page, server, frames, problems, proxy, serve } = await open();
    await waitForStatus(page, 'connected');
    await say(page, 'hello there');
    await nthReply(page, 1);
    const first = lastPrompt(frames);
    // The server goes away (its connections dropped) and a new one starts on the same port: it knows nothing of
    // the old one's conversations.
    proxy.drop();
    await server.close({ mode: 'cancel' });
    await waitForStatus(page, /^disconnected/);
    await serve(server.address.port);
    await say(page, 'hello there');
    await nthReply(page, 2);
    expect((await notes(page)).at(-1)).toMatch(/^The earlier conversation could not be resumed: the server no longer has it/);
    expect(lastPrompt(frames)).toBe(first); // a new conversation indeed
    const tokens = frames.filter((f) => f.type === 'conversation').map((f) => f.token);
    expect(await page.evaluate(() => sessionStorage.getItem('vikdf-chat:conversation'))).toBe(tokens.at(-1));
    expect(problems).toEqual([]);
  });
});
