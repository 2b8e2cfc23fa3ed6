import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { FormatRegistry, type Static, type TSchema } from '@sinclair/typebox';

// TypeBox rejects every value of a format nobody registered; the protocol's times are RFC 3339 UTC.
if (!FormatRegistry.Has('date-time')) {
  FormatRegistry.Set(
    'date-time',
    (value) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(value) && !Number.isNaN(Date.parse(value)),
  );
}

export interface SchemaViolation {
  /** Dotted path of the offending field, `params` for the object itself. */
  field: string;
  expected: string;
}

export type Validation<T> = { ok: true; value: T } | { ok: false; violation: SchemaViolation };

const cache = new WeakMap<TSchema, TypeCheck<TSchema>>();

const compiled = <T extends TSchema>(schema: T): TypeCheck<T> => {
  let check = cache.get(schema);
  if (!check) {
    check = TypeCompiler.Compile(schema);
    cache.set(schema, check);
  }
  return check as TypeCheck<T>;
};

const toField = (root: string, pointer: string): string => {
  const parts = pointer
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'));
  return [root, ...parts].filter((part) => part !== '').join('.');
};

// Field names come from the sender; a huge one must not make the error reply huge.
const clip = (text: string, max = 200): string => (text.length > max ? `${text.slice(0, max)}…` : text);

/**
 * How deep a JSON value nests, counted without recursion so a hostile value cannot overflow the
 * stack; stops counting once past `limit`.
 */
export const nestingDepth = (value: unknown, limit: number): number => {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop() as [unknown, number];
    if (typeof current !== 'object' || current === null) continue;
    deepest = Math.max(deepest, depth);
    if (deepest > limit) return deepest;
    for (const child of Object.values(current)) stack.push([child, depth + 1]);
  }
  return deepest;
};

/** Checks untrusted input against a schema and says which field is wrong and what was expected. */
export const validate = <T extends TSchema>(
  schema: T,
  value: unknown,
  root = 'params',
): Validation<Static<T>> => {
  const check = compiled(schema);
  if (check.Check(value)) return { ok: true, value: value as Static<T> };
  const first = check.Errors(value).First();
  if (!first) return { ok: false, violation: { field: root, expected: 'a valid value' } };
  return {
    ok: false,
    violation: { field: clip(toField(root, first.path) || root), expected: first.message },
  };
};
