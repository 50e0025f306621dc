// Engine.load() without a source when the default model package is unusable: a clear, typed error.
import { expect, it, vi } from 'vitest';

it('fails with no_default_model when @vikdf/model-mini gives no bundle', async () => {
  vi.doMock('@vikdf/model-mini', () => ({ name: 'vikdf-mini' })); // installed, but without bundlePath
  const { Engine, VikdfError } = await import('../src/index.js');
  const error = await Engine.load().catch((e: unknown) => e);
  expect(error).toBeInstanceOf(VikdfError);
  expect(error).toMatchObject({ code: 'no_default_model', message: expect.stringContaining('@vikdf/model-mini') });
});
