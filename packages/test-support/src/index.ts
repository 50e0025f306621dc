// Private helpers shared by the repository's tests (never published): where the fixtures are, and a browser
// that runs on a fresh machine without root. Every package's tests import these instead of computing paths.
export { fixturesDir, repoRoot, tinyBundle, tinyGolden, tinyGoldenPath, type TinyGolden, type TinyGoldenRow } from './fixtures.js';
export { decidedIds, decidedSteps } from './near-ties.js';
export { upgradeRequest } from './raw-websocket.js';
export { launchBrowser, BROWSER_FLAGS, type Browser, type Page } from './browser.js';
