/**
 * The VIKDF WebSocket protocol, version 1 (docs/websocket-protocol.md): JSON text frames, each an object with a
 * `type` and an optional `id` that correlates a request with its replies.
 */
import type { FinishReason, GenerationOptions } from '@vikdf/core';

export const PROTOCOL_VERSION = 1;

/** The path the server accepts WebSocket upgrades on. */
export const WS_PATH = '/ws';

/** Close codes the server uses (the WebSocket standard ones, and its own in 4000-4999). */
export const CloseCode = {
  /** The client closed normally. */
  normal: 1000,
  /** The server is shutting down. */
  goingAway: 1001,
  /** The client kept sending after being rate limited (a flood). */
  policyViolation: 1008,
  /** A frame was larger than `maxFrameBytes` (closed by ws itself). */
  messageTooBig: 1009,
  /** A text frame that is not valid UTF-8 (closed by ws itself). */
  invalidPayload: 1007,
  /** No frame from the client and no reply in progress for `idleTimeoutMs`. */
  idleTimeout: 4000,
  /** Wrong token, or no valid token within `authTimeoutMs` when the server requires one. */
  unauthorized: 4001,
  /** The client read too slowly: replies stayed buffered past `stallTimeoutMs`, or over `maxBufferedBytes`. */
  slowReader: 4002,
  /** The client's hello asked for a protocol version the server does not speak. */
  unsupportedProtocol: 4003,
} as const;
export type CloseCodeName = keyof typeof CloseCode;

/** Stable error codes of `error` frames. */
export type ErrorCode =
  // frames the server cannot take
  | 'bad_json'
  | 'bad_frame'
  | 'unknown_type'
  | 'binary_not_supported'
  | 'unsupported_protocol'
  // authentication
  | 'auth_required'
  | 'unauthorized'
  // limits
  | 'rate_limited'
  | 'too_many_requests'
  | 'too_many_conversations'
  | 'duplicate_id'
  | 'unknown_request'
  | 'shutting_down'
  // from the engine (@vikdf/core's VikdfError codes; bad_option also for GenerationOptionsError)
  | 'empty_message'
  | 'message_too_long'
  | 'bad_option'
  | 'queue_full'
  | 'engine_closed'
  | 'generation_failed'
  | 'internal_error';

// -- client -> server -------------------------------------------------------------------------------------

/** Optional: states the protocol version the client speaks. */
export interface ClientHelloFrame {
  type: 'hello';
  id?: string;
  protocol: number;
}

/** Authenticates with the server's bearer token (browsers cannot set an Authorization header). */
export interface AuthFrame {
  type: 'auth';
  id?: string;
  token: string;
}

/** A user message to answer in a conversation of this connection. */
export interface MessageFrame {
  type: 'message';
  /** Request id, echoed in its token, done and error frames (the server makes one up when absent). */
  id?: string;
  /** Conversation id, unique within the connection (default "default"). */
  conversation?: string;
  text: string;
  /** Generation options (camelCase, as @vikdf/core), within the server's limits. */
  options?: GenerationOptions;
}

/** Stops the reply to message `id`; it ends with a done frame whose finishReason is "aborted". */
export interface CancelFrame {
  type: 'cancel';
  id: string;
}

/** Forgets a conversation's history (stopping its replies in progress); answered by reset_ok. */
export interface ResetFrame {
  type: 'reset';
  id?: string;
  conversation?: string;
}

/** Application-level heartbeat (browsers cannot send WebSocket pings); answered by pong. */
export interface PingFrame {
  type: 'ping';
  id?: string;
}

export type ClientFrame = ClientHelloFrame | AuthFrame | MessageFrame | CancelFrame | ResetFrame | PingFrame;

// -- server -> client -------------------------------------------------------------------------------------

export interface ModelSummary {
  /** The bundle's name (manifest `name`). */
  name: string;
  /** `export` (trained by training/) or `convert` (an official checkpoint). */
  source: string;
  textEncoder: string;
  llm: string;
  /** Total parameters over the bundle's parts. */
  parameters: number;
}

/** What the server enforces, as announced in hello. */
export interface AnnouncedLimits {
  maxFrameBytes: number;
  maxMessageChars: number;
  maxNewTokens: number;
  maxNumBeams: number;
  maxConversations: number;
  maxConcurrentRequests: number;
  idleTimeoutMs: number;
  heartbeatMs: number;
}

/** First frame of every connection. */
export interface HelloFrame {
  type: 'hello';
  protocol: typeof PROTOCOL_VERSION;
  /** Server software and version. */
  server: string;
  /** This connection's id (for logs). */
  connection: string;
  /** `required`: send an auth frame (or an Authorization header at upgrade) before messages. */
  auth: 'none' | 'required';
  /** Whether this connection may send messages now. */
  authenticated: boolean;
  model: ModelSummary;
  /** The execution provider running the model: cuda, webgpu or cpu. */
  device: string;
  limits: AnnouncedLimits;
  /** Generation options the server applies under the client's. */
  defaults: GenerationOptions;
}

export interface AuthOkFrame {
  type: 'auth_ok';
  id?: string;
}

/** A chunk of a streamed reply. Chunks of one request arrive in order (`seq` 0, 1, ...) before its done. */
export interface TokenFrame {
  type: 'token';
  id: string;
  conversation: string;
  seq: number;
  text: string;
}

/** A finished reply: its full text (equal to its token chunks joined), token counts and timings. */
export interface DoneFrame {
  type: 'done';
  id: string;
  conversation: string;
  text: string;
  finishReason: FinishReason;
  usage: { promptTokens: number; completionTokens: number };
  timings: { queuedMs: number; firstTokenMs: number; totalMs: number };
}

export interface ResetOkFrame {
  type: 'reset_ok';
  id?: string;
  conversation: string;
}

export interface PongFrame {
  type: 'pong';
  id?: string;
  /** Server time (ms since the epoch). */
  time: number;
}

export interface ErrorFrame {
  type: 'error';
  /** The request it answers, when there is one (a message's error ends that request). */
  id?: string;
  code: ErrorCode;
  message: string;
  /** bad_option: which generation option. */
  option?: string;
  /** rate_limited: when a request would be accepted again. */
  retryAfterMs?: number;
}

export type ServerFrame = HelloFrame | AuthOkFrame | TokenFrame | DoneFrame | ResetOkFrame | PongFrame | ErrorFrame;

/** Longest request id and conversation id. */
export const MAX_ID_LENGTH = 128;
export const DEFAULT_CONVERSATION = 'default';

/** A valid request or conversation id: a non-empty string of at most MAX_ID_LENGTH characters. */
export function isValidId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_ID_LENGTH;
}
