/**
 * The VIKDF WebSocket protocol, version 1 (docs/websocket-protocol.md): JSON text frames, each an object with a
 * `type` and an optional `id` that correlates a request with its replies.
 */
import type { FinishReason, GenerationOptions } from '@vikdf/core';

export const PROTOCOL_VERSION = 1;

/**
 * Optional parts of protocol 1 this server has, announced in hello's `features` (a client checks for one before
 * using it; servers without the field have none of them).
 * - `resume`: conversations have tokens (`conversation` frames) and a `resume` frame picks one up again on
 *   another connection.
 */
export const FEATURES = ['resume'] as const;
export type Feature = (typeof FEATURES)[number];

/** Request ids beginning with this are the server's (made up for messages without an id); clients cannot use them. */
export const SERVER_ID_PREFIX = 'srv:';

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
  // resumable conversations
  | 'conversation_moved'
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
  /** Optional features the client wants (see FEATURES): `resume` turns on `conversation` frames. */
  features?: string[];
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

/**
 * Picks up a conversation of an earlier connection (feature `resume`) under the name `conversation` of this one;
 * answered by a `conversation` frame (`resumed: false` and a fresh conversation when the token is unknown).
 */
export interface ResumeFrame {
  type: 'resume';
  id?: string;
  conversation?: string;
  /** The token of a `conversation` frame. */
  token: string;
}

export type ClientFrame = ClientHelloFrame | AuthFrame | MessageFrame | CancelFrame | ResetFrame | PingFrame | ResumeFrame;

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
  /**
   * About how many characters a message may have: the server's cap, lowered to what the model's token budget
   * holds of ordinary English (measured with its tokenizer). A guide; the rule is `maxMessageTokens`.
   */
  maxMessageChars: number;
  /** Tokens a message alone may have (the prompt budget less the chat template and knowledge tokens). */
  maxMessageTokens?: number;
  /** The model's prompt budget (context window) in tokens: older turns are dropped to fit it. */
  maxPromptTokens?: number;
  maxNewTokens: number;
  maxNumBeams: number;
  maxConversations: number;
  maxConcurrentRequests: number;
  idleTimeoutMs: number;
  heartbeatMs: number;
  /** How long a conversation can be resumed after its connection closed (feature `resume`). */
  resumeTtlMs?: number;
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
  /** Optional parts of protocol 1 the server has (see FEATURES). */
  features?: string[];
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

/**
 * A conversation's token (feature `resume`): sent when a message starts a new conversation (with that message's
 * id, before its token frames), and in answer to a `resume` frame. Keep `token` to resume the conversation on
 * another connection.
 */
export interface ConversationFrame {
  type: 'conversation';
  id?: string;
  conversation: string;
  token: string;
  /** True when a resume picked up the earlier history; false for a new conversation. */
  resumed: boolean;
  /** Why a resume did not pick anything up: `unknown` (expired, forgotten, or the server restarted). */
  reason?: 'unknown';
  /** A resumed conversation's turns, oldest first (user, bot, user, bot, ...; a reply cut short is kept as far as it got). */
  history?: string[];
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
  /** conversation_moved: the conversation (of this connection) concerned. */
  conversation?: string;
}

export type ServerFrame = HelloFrame | AuthOkFrame | TokenFrame | DoneFrame | ResetOkFrame | PongFrame | ErrorFrame | ConversationFrame;

/** Longest request id and conversation id. */
export const MAX_ID_LENGTH = 128;
export const DEFAULT_CONVERSATION = 'default';

/** A valid request or conversation id: a non-empty string of at most MAX_ID_LENGTH characters. */
export function isValidId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_ID_LENGTH;
}
