export {
  BUNDLE_FORMAT,
  BUNDLE_FORMAT_VERSION,
  BundleError,
  GRAPH_NAMES,
  MANIFEST_FILE,
  TOKENIZER_FILES,
  parseManifest,
  readManifest,
  referencedFiles,
  sha256File,
  verifyBundle,
} from './bundle.js';
export type {
  BundleErrorCode,
  BundleManifest,
  GenerationDefaults,
  GraphName,
  GraphSpec,
  ModelInfo,
  PromptInfo,
  TensorSpec,
  TextEncoderInput,
  TokenInfo,
  Truncation,
} from './bundle.js';
export { BundleTokenizer } from './tokenizer.js';
export type { DecodeOptions, EncodeOptions } from './tokenizer.js';
export { PromptFormatter, dialogueMessages } from './prompt.js';
export type { ChatMessage, DialogueInputs, RenderOptions, RenderedPrompt } from './prompt.js';
export { StreamDecoder, trimReplyStart } from './detokenize.js';
export type { StreamDecoderOptions } from './detokenize.js';
export {
  BEAM_STOP_RULES,
  BeamSearch,
  GenerationOptionsError,
  Rng,
  StopChecker,
  TokenSelector,
  applyRepetitionPenalty,
  applyTemperature,
  argmax,
  banNgramRepeats,
  bannedNgramTokens,
  logSoftmax,
  minP,
  resolveOptions,
  sample,
  softmax,
  suppressTokens,
  topIndices,
  topK,
  topP,
} from './generation/index.js';
export type {
  BeamSearchOptions,
  BeamStep,
  BeamStopRule,
  GenerationLimits,
  GenerationOptions,
  LogitsRow,
  RandomSource,
  ResolvedGenerationOptions,
  StopCheckerOptions,
  TextCheck,
  TokenSelectorOptions,
} from './generation/index.js';
export { Engine } from './engine.js';
export type { BundleSource, EngineEvents, EngineOptions, GenerateRequest } from './engine.js';
export { Conversation } from './conversation.js';
export type { ConversationOptions, SendOptions } from './conversation.js';
export { Generation } from './generation-handle.js';
export type { FinishReason, GenerationEvents, GenerationResult } from './generation-handle.js';
export { VikdfError } from './errors.js';
export type { VikdfErrorCode } from './errors.js';
export { KvCache } from './kv-cache.js';
export type { KvShape } from './kv-cache.js';
export { BundleRuntime, DEFAULT_DEVICES, VULKAN_LOADER, checkGraph, describeProvider, findVulkanLoader } from './runtime.js';
export type { Device, Precision, ProviderReport, RuntimeOptions, VulkanLoaderSearch } from './runtime.js';
export { scoreContinuation } from './scoring.js';
export { spliceKnowledge } from './splice.js';
export type { TokenScore } from './scoring.js';
