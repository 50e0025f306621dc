// `vikdf serve`: the WebSocket chat server and page of @vikdf/websocket (what `pnpm start` runs in this
// repository), for users who installed the packages. @vikdf/websocket depends on @vikdf/core, so core cannot
// depend on it: it is loaded at run time, from core's own location or from the user's project.
import { createRequire } from 'node:module';
import path from 'node:path';
import type { BundleSource, EngineOptions } from './engine.js';
import type { Engine } from './engine.js';
import { describeProvider } from './runtime.js';

/** What `vikdf serve` uses of @vikdf/websocket's `serve()`. */
interface Serving {
  url: string;
  wsUrl: string;
  engine: Engine;
  close(options: { mode: 'finish'; timeoutMs: number }): Promise<void>;
}
interface WebsocketPackage {
  serve(options: {
    bundle: BundleSource | undefined;
    host: string;
    port: number;
    token?: string;
    engineOptions: EngineOptions;
    defaults: { numBeams: number };
  }): Promise<Serving>;
}

export interface ServeSettings {
  bundle: string | undefined;
  host: string;
  port: number;
  token: string | undefined;
  engineOptions: EngineOptions;
}

async function loadWebsocket(): Promise<WebsocketPackage> {
  const name = '@vikdf/websocket';
  try {
    return (await import(name)) as WebsocketPackage;
  } catch {
    // Not beside core (pnpm's isolated layout, for one): the user's project may have it.
    try {
      return createRequire(path.join(process.cwd(), 'package.json'))(name) as WebsocketPackage;
    } catch {
      throw new Error(`needs the package ${name} beside @vikdf/core (npm i ${name})`);
    }
  }
}

/** Serves until SIGINT or SIGTERM, then lets replies in progress finish (5 s) and returns. */
export async function serveUntilStopped(settings: ServeSettings): Promise<void> {
  const websocket = await loadWebsocket();
  const serving = await websocket.serve({
    bundle: settings.bundle,
    host: settings.host,
    port: settings.port,
    ...(settings.token ? { token: settings.token } : {}),
    engineOptions: settings.engineOptions,
    defaults: { numBeams: 1 }, // greedy, so that replies stream token by token
  });
  const { engine } = serving;
  process.stdout.write(
    `VIKDF chat: ${serving.url}\n` +
      `  model: ${describeProvider(engine.manifest.name, engine.provider)}\n` +
      `  WebSocket: ${serving.wsUrl}${settings.token ? ' (bearer token required)' : ''}\n` +
      '  Ctrl+C stops it.\n',
  );
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  process.stdout.write(`${signal}: stopping (replies in progress get 5 s)\n`);
  await serving.close({ mode: 'finish', timeoutMs: 5000 });
  process.stdout.write('stopped\n');
}
