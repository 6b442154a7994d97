import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { type FieldError, mapDatabaseError, TenantryError } from '../errors/errors.js';

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
  FST_ERR_MAX_PARAM_LENGTH: 'uri.param_too_long',
  FST_ERR_BAD_URL: 'url.malformed',
};

/**
 * The one place an error becomes an answer: Tenantry's errors keep their code and status; database
 * errors are mapped here (`mapDatabaseError`: conflicts, isolation, bad values, an unavailable
 * database → 503); Fastify's own client errors get stable codes; anything else is a logged 500.
 */
export function toProblem(thrown: unknown, request: FastifyRequest): Problem {
  const err = mapDatabaseError(thrown);
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
    const body = fe.validationContext === 'body';
    const fieldCodes = body ? (request.routeOptions?.config?.fieldCodes ?? {}) : {};
    const errors = fe.validation.map((v) => {
      const name =
        v.keyword === 'required'
          ? `/${String(v.params?.missingProperty)}`
          : v.keyword === 'additionalProperties'
            ? `/${String(v.params?.additionalProperty)}`
            : '';
      const pointer = `${v.instancePath}${name}` || '/';
      return {
        pointer,
        code:
          fieldCodes[pointer] ?? (v.keyword === 'additionalProperties' ? 'field.unknown' : 'field.invalid'),
        message: `${fe.validationContext ?? 'request'}: ${v.message ?? 'invalid'}`,
      };
    });
    const specific = errors.find((e) => fieldCodes[e.pointer] !== undefined)?.code;
    // A body that parsed but breaks its schema is unprocessable (422), as the services answer it;
    // a query string, path or header that breaks its schema is a bad request (400).
    return problem(
      body ? 422 : 400,
      specific ??
        `${fe.validationContext === 'querystring' ? 'query' : (fe.validationContext ?? 'request')}.invalid`,
      'The request is invalid.',
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

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  if (p.status === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', '1');
  return reply.code(p.status).type('application/problem+json').send(p);
}
