/**
 * One error type for the whole product: a stable machine code, an HTTP status and a safe message.
 * Responses render it as RFC 9457 problem+json (see http/problem.ts).
 */
export interface FieldError {
  /** JSON pointer (RFC 6901) to the offending field, relative to the request body or manifest. */
  pointer: string;
  code: string;
  message: string;
}

export class TenantryError extends Error {
  readonly code: string;
  readonly status: number;
  readonly errors: FieldError[];
  readonly details: Record<string, unknown>;

  constructor(
    code: string,
    status: number,
    message: string,
    opts: { errors?: FieldError[]; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.errors = opts.errors ?? [];
    this.details = opts.details ?? {};
  }
}

/** 400/422: the input is malformed or violates a rule. */
export class ValidationError extends TenantryError {
  constructor(code: string, message: string, errors: FieldError[] = [], status = 422) {
    super(code, status, message, { errors });
  }
  static field(pointer: string, code: string, message: string): ValidationError {
    return new ValidationError(code, message, [{ pointer, code, message }]);
  }
}

export class NotFoundError extends TenantryError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super(code, 404, message, { details });
  }
}

export class ConflictError extends TenantryError {
  constructor(
    code: string,
    message: string,
    opts: { errors?: FieldError[]; details?: Record<string, unknown>; status?: number } = {},
  ) {
    super(code, opts.status ?? 409, message, opts);
  }
}

export class ForbiddenError extends TenantryError {
  constructor(code: string, message: string) {
    super(code, 403, message);
  }
}

/** Collects field errors so that one response can name every offending field. */
export class FieldErrors {
  readonly list: FieldError[] = [];
  add(pointer: string, code: string, message: string): void {
    this.list.push({ pointer, code, message });
  }
  get empty(): boolean {
    return this.list.length === 0;
  }
  throwIfAny(code = 'validation.failed', message = 'The input is invalid.'): void {
    if (this.list.length > 0) throw new ValidationError(code, message, this.list);
  }
}

/** 503: a dependency (the database) cannot be reached now; retrying later may succeed. */
export class UnavailableError extends TenantryError {
  constructor(code: string, message: string, cause?: unknown) {
    super(code, 503, message, { cause });
  }
}

/**
 * Errors that mean "the database is not reachable right now", not "the request is wrong": the
 * server is shutting down or starting (57P01-57P03), too many connections (53300), the connection
 * broke or could not be made (class 08, socket errors, pg's own messages for a dropped connection,
 * a connect timeout or a pool that is closing).
 */
const UNAVAILABLE_CODE =
  /^(08...|57P0[123]|53300|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN)$/;
const UNAVAILABLE_MESSAGE =
  /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Client was closed and is not queryable|Cannot use a pool after calling end)|the database system is (starting up|shutting down|in recovery mode)/;

/** True when err, or anything in its cause chain (or an AggregateError's errors), says the database is unreachable. */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof AggregateError && e.errors.some(isDatabaseUnavailable)) return true;
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && UNAVAILABLE_CODE.test(code)) return true;
    if (typeof message === 'string' && UNAVAILABLE_MESSAGE.test(message)) return true;
  }
  return false;
}

/**
 * Maps PostgreSQL errors to typed errors: those that input can provoke (4xx) and those that say the
 * database is unreachable (503); everything else stays as is.
 */
export function mapDatabaseError(err: unknown): unknown {
  if (err instanceof TenantryError) return err;
  const e = err as { code?: string; constraint?: string; detail?: string; message?: string };
  if (isDatabaseUnavailable(err)) {
    return new UnavailableError('database.unavailable', 'The database is unavailable; retry shortly.', err);
  }
  switch (e?.code) {
    case '23505':
      return new ConflictError('object.duplicate', 'An object with the same identity already exists.', {
        details: { constraint: e.constraint },
      });
    case '23503':
      return new ConflictError('object.reference_missing', 'A referenced object does not exist.', {
        details: { constraint: e.constraint },
      });
    case '40001':
    case '40P01':
      return new ConflictError('transaction.conflict', 'A concurrent change conflicted; retry the request.', {
        status: 409,
      });
    case '42501':
      // Row-level security refused a row: the last line of tenant isolation.
      return new ForbiddenError('tenant.isolation', 'The change would cross a tenant boundary.');
    case '22P02':
    case '22023':
      return new ValidationError('value.invalid', 'A value has an invalid format.', [], 400);
    case '22021': // character_not_in_repertoire: a NUL character (\u0000), which text cannot hold
    case '22P05': // untranslatable_character
      return new ValidationError(
        'value.invalid',
        'A value holds a character that cannot be stored.',
        [],
        400,
      );
    default:
      return err;
  }
}

/** 401: no acceptable credentials (missing, invalid or expired token; broken session binding). */
export class UnauthorizedError extends TenantryError {
  constructor(code: string, message: string) {
    super(code, 401, message);
  }
}
