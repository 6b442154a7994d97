import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parseAllDocuments } from 'yaml';
import { type FieldError, ValidationError } from '../errors/errors.js';
import { KINDS, type Kind, type Manifest, manifestSchema } from '../registry/kinds/index.js';
import { API_VERSION } from './manifest.js';

const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
const validators = new Map<Kind, ValidateFunction>(KINDS.map((k) => [k, ajv.compile(manifestSchema(k))]));

export const MAX_DOCUMENTS = 5000;

/** Parses a body of one or more YAML (or JSON, a subset of YAML) documents. Malformed → 400. */
export function parseDocuments(text: string): unknown[] {
  const docs = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: false });
  if (!Array.isArray(docs)) {
    return [];
  }
  const out: unknown[] = [];
  for (const [i, doc] of docs.entries()) {
    let value: unknown;
    try {
      const err = doc.errors[0];
      if (err) throw err;
      // Unresolvable aliases and alias bombs throw here rather than in the parser.
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      const message = String((err as Error).message).split('\n')[0] ?? 'malformed';
      throw new ValidationError(
        'manifest.malformed',
        `Document ${i} is not valid YAML/JSON: ${message}`,
        [{ pointer: `/${i}`, code: 'manifest.malformed', message }],
        400,
      );
    }
    if (value === null || value === undefined) continue; // empty document (e.g. a trailing ---)
    // A JSON array of manifests or a `List` wrapper are accepted as well as separate documents.
    if (Array.isArray(value)) out.push(...value);
    else if (isRecord(value) && value.kind === 'List' && Array.isArray(value.items)) out.push(...value.items);
    else out.push(value);
  }
  if (out.length > MAX_DOCUMENTS) {
    throw new ValidationError(
      'manifest.too_many',
      `At most ${MAX_DOCUMENTS} documents per request.`,
      [],
      413,
    );
  }
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function ajvErrors(errors: ErrorObject[] | null | undefined, prefix: string): FieldError[] {
  const out: FieldError[] = [];
  const seen = new Set<string>();
  for (const e of errors ?? []) {
    let pointer = `${prefix}${e.instancePath}`;
    let code = 'field.invalid';
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties') {
      pointer += `/${String(e.params.additionalProperty).replace(/~/g, '~0').replace(/\//g, '~1')}`;
      code = 'field.unknown';
      message = 'is not a known field';
    } else if (e.keyword === 'required') {
      pointer += `/${String(e.params.missingProperty)}`;
      code = 'field.required';
      message = 'is required';
    } else if (e.keyword === 'pattern') {
      message = `must match ${String(e.params.pattern)}`;
    }
    const key = `${pointer}|${code}|${message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push({ pointer, code, message });
    }
  }
  return out;
}

/** Validates one document; returns its errors with pointers under `prefix`. */
export function checkManifest(doc: unknown, prefix: string): { manifest?: Manifest; errors: FieldError[] } {
  if (!isRecord(doc))
    return {
      errors: [
        { pointer: prefix || '/', code: 'manifest.not_object', message: 'a manifest must be an object' },
      ],
    };
  if (doc.apiVersion !== API_VERSION) {
    return {
      errors: [
        {
          pointer: `${prefix}/apiVersion`,
          code: 'manifest.api_version',
          message: `must be "${API_VERSION}"`,
        },
      ],
    };
  }
  const kind = doc.kind;
  const validate = typeof kind === 'string' ? validators.get(kind as Kind) : undefined;
  if (!validate) {
    return {
      errors: [
        {
          pointer: `${prefix}/kind`,
          code: 'manifest.kind_unknown',
          message: `must be one of ${KINDS.join(', ')}`,
        },
      ],
    };
  }
  if (validate(doc)) return { manifest: doc as unknown as Manifest, errors: [] };
  return { errors: ajvErrors(validate.errors, prefix) };
}

/** Validates every document: the valid ones with their index, and every error with its pointer. */
export function validateManifests(docs: unknown[]): {
  valid: { m: Manifest; i: number }[];
  errors: FieldError[];
} {
  const valid: { m: Manifest; i: number }[] = [];
  const errors: FieldError[] = [];
  docs.forEach((doc, i) => {
    const r = checkManifest(doc, `/${i}`);
    if (r.manifest) valid.push({ m: r.manifest, i });
    errors.push(...r.errors);
  });
  return { valid, errors };
}
