import { project } from '../vitest.shared.js';

// Repository-level tests (test/faults/, ...): the project's root is this folder.
export default project('repo', ['**/*.test.ts']);
