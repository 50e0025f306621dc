/** Loads a bundle and serves it: the one-call setup used by `pnpm start` and the examples. */
import { Engine, type BundleSource, type EngineOptions } from '@vikdf/core';
import { createServer, type CloseOptions, type ServerOptions, type VikdfServer } from './server.js';

export interface ServeOptions extends Omit<ServerOptions, 'engine'> {
  /** The model bundle: a directory, a `file:` URL, or a model package's `{ bundlePath }`. */
  bundle: BundleSource;
  /** Options of `Engine.load` (devices, variant, concurrency...). */
  engineOptions?: EngineOptions;
}

export interface Serving {
  server: VikdfServer;
  engine: Engine;
  /** The chat page, e.g. `http://127.0.0.1:8787/`. */
  url: string;
  /** The WebSocket endpoint, e.g. `ws://127.0.0.1:8787/ws`. */
  wsUrl: string;
  /** Shuts the server down gracefully, then closes the engine. */
  close(options?: CloseOptions): Promise<void>;
}

export async function serve(options: ServeOptions): Promise<Serving> {
  const { bundle, engineOptions, ...serverOptions } = options;
  const engine = await Engine.load(bundle, engineOptions);
  let server: VikdfServer;
  try {
    server = createServer({ ...serverOptions, engine });
    await server.listen();
  } catch (err) {
    await engine.close('cancel');
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    server,
    engine,
    url: server.url,
    wsUrl: server.wsUrl,
    close(closeOptions: CloseOptions = {}) {
      closing ??= (async () => {
        await server.close(closeOptions);
        await engine.close(closeOptions.mode === 'cancel' ? 'cancel' : 'finish');
      })();
      return closing;
    },
  };
}
