/** Errors of the engine that callers may want to tell apart; each has a stable `code`. */
export type VikdfErrorCode =
  | 'empty_message'
  | 'message_too_long'
  | 'bad_option'
  | 'queue_full'
  | 'engine_closed'
  | 'generation_failed'
  | 'no_default_model';

export class VikdfError extends Error {
  override name = 'VikdfError';
  constructor(
    readonly code: VikdfErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
