export {
  CloseCode,
  DEFAULT_CONVERSATION,
  FEATURES,
  MAX_ID_LENGTH,
  PROTOCOL_VERSION,
  SERVER_ID_PREFIX,
  WS_PATH,
  isValidId,
} from './protocol.js';
export type {
  AnnouncedLimits,
  AuthFrame,
  AuthOkFrame,
  CancelFrame,
  ClientFrame,
  ClientHelloFrame,
  CloseCodeName,
  ConversationFrame,
  DoneFrame,
  ErrorCode,
  ErrorFrame,
  Feature,
  HelloFrame,
  MessageFrame,
  ModelSummary,
  PingFrame,
  PongFrame,
  ResetFrame,
  ResetOkFrame,
  ResumeFrame,
  ServerFrame,
  TokenFrame,
} from './protocol.js';
export { DEFAULT_LIMITS, VikdfServer, createServer, errorFrame } from './server.js';
export type {
  ChatConversation,
  ChatEngine,
  CloseOptions,
  ConnectionInfo,
  ConnectionState,
  DisconnectInfo,
  ServerEvents,
  ServerLimits,
  ServerOptions,
} from './server.js';
export { DropWindow, TokenBucket } from './rate-limit.js';
export type { RateLimit } from './rate-limit.js';
export { Reply, VikdfClient, VikdfClientError } from './client.js';
export type { ClientErrorCode, ClientEvents, ClientOptions, ClientSendOptions, CloseInfo, ReconnectInfo, ReplyEvents, ResumeResult } from './client.js';
export { serve } from './serve.js';
export type { ServeOptions, Serving } from './serve.js';
