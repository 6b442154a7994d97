import http from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type Problem, problem, sendProblem, toProblem } from './problem.js';

/** The longest path parameter the router matches (Fastify's `maxParamLength`, its default); longer: 414. */
export const MAX_PARAM_LENGTH = 100;

/**
 * Every error answer is RFC 9457 problem+json (call before any route is registered):
 * - thrown errors, validation failures, Fastify's own client errors and database errors: `toProblem`;
 * - no route: 404 `route.not_found` (the router's own refusals: {@link frameworkErrorAnswer});
 * - a request that arrives while the server closes: 503 `server.closing` with `Connection: close`
 *   (instead of Fastify's own JSON; the server is built with `return503OnClosing: false`).
 * Errors before a request exists (header overflow, malformed HTTP) are answered by
 * {@link clientErrorAnswer}, passed to Fastify as `clientErrorHandler`.
 */
export function installErrorAnswers(app: FastifyInstance): void {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    if (!closing) return;
    reply.header('connection', 'close');
    return sendProblem(
      reply,
      problem(503, 'server.closing', 'The server is shutting down; retry the request.', [], {
        instance: request.id,
      }),
    );
  });

  app.setErrorHandler((err, request, reply) => {
    const p = toProblem(err, request);
    if (p.status >= 500 && p.code !== 'database.unavailable') request.log.error({ err }, 'request failed');
    else if (p.status >= 500) request.log.warn({ err }, 'database unavailable');
    return sendProblem(reply, p);
  });

  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      problem(404, 'route.not_found', `No route ${request.method} ${request.url.split('?')[0]}.`, [], {
        instance: request.id,
      }),
    ),
  );
}

/**
 * The router's own refusals, before a route is found (Fastify's `frameworkErrors`): a path parameter
 * over {@link MAX_PARAM_LENGTH} characters (414 `uri.param_too_long`), a malformed URL (400 `url.malformed`).
 */
export function frameworkErrorAnswer(err: Error, request: FastifyRequest, reply: FastifyReply): void {
  sendProblem(reply, toProblem(err, request));
}

/** Errors of the HTTP parser, before Fastify has a request: 431 for oversized headers, else 400. */
export function clientErrorAnswer(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const p: Problem =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? problem(431, 'headers.too_large', 'The request headers are larger than the server accepts.')
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? problem(408, 'request.timeout', 'The request was not received in time.')
        : problem(400, 'request.malformed', 'The request is not valid HTTP.');
  if (socket.writable) {
    const body = JSON.stringify(p);
    socket.write(
      `HTTP/1.1 ${p.status} ${http.STATUS_CODES[p.status]}\r\nConnection: close\r\n` +
        `Content-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
