/**
 * One error class per kind, each with a stable `code` and the HTTP status it
 * maps to. The coordinator maps them to responses in one place; the CLI, agent
 * and gateway rebuild them from `{"error": {"code", "message"}}` bodies.
 */
export class NetwallError extends Error {
  readonly code: string = 'internal';
  readonly status: number = 500;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The client sent something malformed; the message names the field. */
export class ValidationError extends NetwallError {
  override readonly code = 'invalid';
  override readonly status = 400;
  constructor(message: string, readonly field?: string) {
    super(message);
  }
}

export class UnauthorizedError extends NetwallError {
  override readonly code = 'unauthorized';
  override readonly status = 401;
}

export class ForbiddenError extends NetwallError {
  override readonly code = 'forbidden';
  override readonly status = 403;
}

export class NotFoundError extends NetwallError {
  override readonly code = 'not_found';
  override readonly status = 404;
}

export class ConflictError extends NetwallError {
  override readonly code = 'conflict';
  override readonly status = 409;
}

/** A pool (addresses, slices, ports) has nothing left to give. */
export class ExhaustedError extends NetwallError {
  override readonly code = 'exhausted';
  override readonly status = 409;
}

export class TooLargeError extends NetwallError {
  override readonly code = 'too_large';
  override readonly status = 413;
}

export class RateLimitedError extends NetwallError {
  override readonly code = 'rate_limited';
  override readonly status = 429;
  constructor(message: string, readonly retryAfterSeconds: number) {
    super(message);
  }
}

/** A command run on the host failed; carries the argv and stderr. */
export class CommandError extends NetwallError {
  override readonly code = 'command_failed';
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(`${argv.join(' ')}: exit ${exitCode ?? '?'}${stderr ? `: ${stderr.trim()}` : ''}`);
  }
}

export interface ErrorBody {
  error: { code: string; message: string };
}

const byCode: Record<string, new (message: string) => NetwallError> = {
  invalid: ValidationError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  conflict: ConflictError,
  exhausted: ExhaustedError,
  too_large: TooLargeError,
};

/** Rebuild a typed error from an API error body (used by the API clients). */
export function errorFromBody(status: number, body: unknown): NetwallError {
  const e = (body as Partial<ErrorBody> | undefined)?.error;
  const message = typeof e?.message === 'string' ? e.message : `HTTP ${status}`;
  if (status === 429) return new RateLimitedError(message, 1);
  const Kind = (e?.code && byCode[e.code]) || undefined;
  if (Kind) return new Kind(message);
  const err = new NetwallError(message);
  Object.defineProperty(err, 'status', { value: status });
  return err;
}
