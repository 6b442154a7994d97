import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { type FieldError, mapDatabaseError, TenantryError } from '../errors/errors.js';

/** Seconds a client should wait before retrying while the database is unreachable. */
export const DATABASE_RETRY_AFTER_SECONDS = 2;

/** RFC 9457 problem details with Tenantry's stable `code` and, for validation, JSON pointers. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
  errors?: { pointer: string; code: string; detail: string }[];
  [extension: string]: unknown;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  408: 'Request Timeout',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  428: 'Precondition Required',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export function problem(
  status: number,
  code: string,
  detail: string,
  errors: FieldError[] = [],
  extra: Record<string, unknown> = {},
): Problem {
  return {
    type: `https://tenantry.dev/problems/${code}`,
    title: TITLES[status] ?? 'Error',
    status,
    detail,
    code,
    ...(errors.length > 0
      ? { errors: errors.map((e) => ({ pointer: e.pointer, code: e.code, detail: e.message })) }
      : {}),
    ...extra,
  };
}

/** Fastify's own client errors, mapped to stable codes. */
const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'body.malformed',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'body.empty',
  FST_ERR_CTP_BODY_TOO_LARGE: 'body.too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'body.media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'body.length',
  FST_ERR_CTP_INVALID_TYPE: 'body.media_type',
  FST_ERR_VALIDATION: 'request.invalid',
  FST_ERR_BAD_URL: 'path.malformed',
  FST_ERR_MAX_PARAM_LENGTH: 'path.too_long',
};

/** Every error answer goes through here: typed errors, database errors (mapped here, once), Fastify's own. */

export function toProblem(error: unknown, request: FastifyRequest): Problem {
  const err = mapDatabaseError(error);
  if (err instanceof TenantryError) {
    return problem(err.status, err.code, err.message, err.errors, {
      instance: request.id,
      ...(Object.keys(err.details).length ? { details: err.details } : {}),
    });
  }
  const fe = err as FastifyError & {
    validation?: {
      instancePath: string;
      message?: string;
      params?: Record<string, unknown>;
      keyword: string;
    }[];
    validationContext?: string;
  };
  if (fe.validation) {
    const context = fe.validationContext ?? 'request';
    const errors = fe.validation.map((v) => {
      const name =
        v.keyword === 'required'
          ? `/${String(v.params?.missingProperty)}`
          : v.keyword === 'additionalProperties'
            ? `/${String(v.params?.additionalProperty)}`
            : '';
      return {
        pointer: `${v.instancePath}${name}` || '/',
        code: v.keyword === 'additionalProperties' ? 'field.unknown' : 'field.invalid',
        message: `${context}: ${v.message ?? 'invalid'}`,
      };
    });
    // A well-formed body that breaks its schema is unprocessable (as a manifest that breaks its rules).
    return problem(
      context === 'body' ? 422 : 400,
      `${context === 'querystring' ? 'query' : context}.invalid`,
      context === 'body' ? 'The request body does not match its schema.' : 'The request is invalid.',
      errors,
      { instance: request.id },
    );
  }
  const status =
    typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500 ? fe.statusCode : 500;
  if (status < 500) {
    const code = FASTIFY_CODES[fe.code] ?? 'request.invalid';
    return problem(status, code, fe.message, [], { instance: request.id });
  }
  return problem(500, 'internal', 'An internal error occurred; it has been logged.', [], {
    instance: request.id,
  });
}

/** Problem+json for the errors Node's HTTP parser answers before Fastify sees a request (400, 408, 431). */
export function onClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, code, detail] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'request.headers_too_large', 'The request headers are too large.']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request.timeout', 'The request took too long to arrive.']
        : [400, 'request.malformed', 'The request is not valid HTTP.'];
  const body = JSON.stringify(problem(status, code, detail));
  socket.end(
    `HTTP/1.1 ${status} ${TITLES[status]}\r\nContent-Type: application/problem+json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  if (p.code === 'database.unavailable') reply.header('retry-after', String(DATABASE_RETRY_AFTER_SECONDS));
  return reply.code(p.status).type('application/problem+json').send(p);
}
