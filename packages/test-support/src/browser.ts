// A headless Chromium for the page tests that needs neither root nor apt: @sparticuz/chromium ships a
// compressed Chromium in the npm package and unpacks it to the temp dir on first use (about 1.5 s);
// playwright-core drives it. The same browser build on every machine, whatever the machine has installed.
import sparticuz from '@sparticuz/chromium';
import { chromium, type Browser } from 'playwright-core';

export type { Browser, Page } from 'playwright-core';

/** Our own flags, not @sparticuz's Lambda defaults (those turn off web security, which the CSP test needs). */
export const BROWSER_FLAGS = [
  '--no-sandbox', // root on CI machines; the page under test is our own
  '--no-zygote',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export async function launchBrowser(): Promise<Browser> {
  let executablePath: string;
  try {
    executablePath = await sparticuz.executablePath();
  } catch (err) {
    throw new Error(`could not unpack @sparticuz/chromium: ${(err as Error).message}`);
  }
  try {
    return await chromium.launch({ executablePath, args: BROWSER_FLAGS, headless: true, timeout: 60_000 });
  } catch (err) {
    throw new Error(`Chromium at ${executablePath} (from @sparticuz/chromium) did not start: ${(err as Error).message}`);
  }
}
