// The bundle directory of the default model, for `Engine.load(bundlePath)` (or `Engine.load(modelMini)`).
import { fileURLToPath } from 'node:url';

export const bundlePath = fileURLToPath(new URL('./bundle/', import.meta.url));
export const name = 'vikdf-mini';
export default { bundlePath, name };
