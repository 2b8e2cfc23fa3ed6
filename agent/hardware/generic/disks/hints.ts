/**
 * Root device hints with ironic-python-agent's semantics (IPA `device_hints.py`, which applies
 * oslo.utils' specs_matcher): every hint must match, the first disk in lsblk order wins, string
 * comparisons ignore case and surrounding blanks, `size` is in GiB compared as a float.
 *
 * Where IPA's behaviour is an accident rather than a rule, a clear refusal replaces it: a numeric
 * operator on a string field (IPA raises deep inside float()), a string operator on `size` (IPA
 * never matches), several `<in>` values (IPA silently uses the first), `<range-in>`.
 */
import type { RootDeviceHints } from '../../../image/contracts.js';
import { AgentError } from '../../../util/errors.js';

export const STRING_HINT_FIELDS = [
  'model',
  'vendor',
  'serial',
  'wwn',
  'wwn_with_extension',
  'wwn_vendor_extension',
  'name',
  'hctl',
  'by_path',
  // Newer IPA (2023+) accepts the transport too; the inventory reports it.
  'tran',
] as const;
export type StringHintField = (typeof STRING_HINT_FIELDS)[number];
export const HINT_FIELDS = ['size', 'rotational', ...STRING_HINT_FIELDS] as const;
export type HintField = (typeof HINT_FIELDS)[number];

export type NumberOperator = '==' | '!=' | '>=' | '>' | '<=' | '<' | '=' | '<or>';
export type StringOperator = 's==' | 's!=' | 's>=' | 's>' | 's<=' | 's<' | '<in>' | '<all-in>' | '<or>';

export type ParsedHint =
  | { field: 'size'; op: NumberOperator; values: number[]; expression: string }
  | { field: 'rotational'; value: boolean; expression: string }
  | { field: StringHintField; op: StringOperator; values: string[]; expression: string };

/** What a disk offers to the matcher; `name` and `by_path` in their `/dev/...` form. */
export type HintSubject = { size: number; rotational: boolean | null } & Record<
  StringHintField,
  string | null
>;

const GIB = 2 ** 30;

// Longest first, so `<=` is not read as `<` and `==` not as `=` (the grammar's own order).
const OPERATORS = [
  '<all-in>',
  '<range-in>',
  '<or>',
  '<in>',
  's==',
  's!=',
  's>=',
  's<=',
  's>',
  's<',
  '==',
  '!=',
  '>=',
  '<=',
  '<',
  '>',
  '=',
] as const;
type Operator = (typeof OPERATORS)[number];

const NUMBER_OPERATORS: ReadonlySet<string> = new Set(['==', '!=', '>=', '>', '<=', '<', '=', '<or>']);
const STRING_OPERATORS: ReadonlySet<string> = new Set([
  's==',
  's!=',
  's>=',
  's>',
  's<=',
  's<',
  '<in>',
  '<all-in>',
  '<or>',
]);

// strutils.bool_from_string(strict=True)
const TRUE_WORDS = new Set(['1', 't', 'true', 'on', 'y', 'yes']);
const FALSE_WORDS = new Set(['0', 'f', 'false', 'off', 'n', 'no']);

const invalid = (field: string, message: string, expression?: unknown): AgentError =>
  new AgentError('INVALID_PARAMS', `root device hint "${field}": ${message}`, {
    details: {
      field: `root_device_hints.${field}`,
      ...(expression === undefined ? {} : { expression }),
    },
  });

const isHintField = (name: string): name is HintField => (HINT_FIELDS as readonly string[]).includes(name);

interface Split {
  op: Operator | null;
  values: string[];
}

/** The operator (if the expression starts with one) and its values, split the way IPA splits them. */
const splitExpression = (expression: string): Split => {
  const op = OPERATORS.find((candidate) => expression.startsWith(candidate)) ?? null;
  if (op === null) return { op, values: [expression] };
  const rest = expression.slice(op.length);
  // IPA splits on the operator itself, so `<or> a b <or> c` is the two values "a b" and "c".
  if (op === '<or>' || op === '<in>')
    return {
      op,
      values: rest
        .split(op)
        .map((value) => value.trim())
        .filter((value) => value !== ''),
    };
  // oslo's `<all-in>` is a list of words that must all occur.
  if (op === '<all-in>')
    return { op, values: rest.split(/\s+/).filter((value) => value !== '' && value !== op) };
  const value = rest.trim();
  return { op, values: value === '' ? [] : [value] };
};

const parseSize = (raw: unknown): ParsedHint => {
  if (typeof raw !== 'string' && typeof raw !== 'number')
    throw invalid('size', `must be a positive integer (GiB) or an expression such as ">= 100"`, raw);
  const expression = String(raw).trim().toLowerCase();
  if (expression === '') throw invalid('size', 'the expression is empty', raw);
  const { op, values } = splitExpression(expression);
  const operator = op ?? '==';
  if (!NUMBER_OPERATORS.has(operator))
    throw invalid(
      'size',
      `operator ${operator} does not apply to a number; use ==, !=, >=, >, <=, < or <or>`,
      raw,
    );
  if (values.length === 0) throw invalid('size', `operator ${operator} has no value`, raw);
  const numbers = values.map((value) => {
    if (!/^\d+$/.test(value) || Number(value) <= 0)
      throw invalid('size', `"${value}" is not a positive integer number of GiB`, raw);
    return Number(value);
  });
  if (operator !== '<or>' && numbers.length !== 1)
    throw invalid('size', `operator ${operator} takes one value`, raw);
  return { field: 'size', op: operator as NumberOperator, values: numbers, expression };
};

const parseRotational = (raw: unknown): ParsedHint => {
  if (typeof raw === 'boolean') return { field: 'rotational', value: raw, expression: String(raw) };
  const word = typeof raw === 'string' || typeof raw === 'number' ? String(raw).trim().toLowerCase() : null;
  if (word !== null && TRUE_WORDS.has(word)) return { field: 'rotational', value: true, expression: word };
  if (word !== null && FALSE_WORDS.has(word)) return { field: 'rotational', value: false, expression: word };
  throw invalid('rotational', 'must be a Boolean (true/false, yes/no, on/off, 1/0)', raw);
};

// IPA compares names in their /dev form; a bare "sda" or a by-path link name is completed so
// the operator can write either.
const completePath = (field: StringHintField, value: string): string => {
  if (value.startsWith('/dev/')) return value;
  if (field === 'name') return `/dev/${value}`;
  if (field === 'by_path') return `/dev/disk/by-path/${value}`;
  return value;
};

const parseString = (field: StringHintField, raw: unknown): ParsedHint => {
  if (typeof raw !== 'string') throw invalid(field, 'must be a string', raw);
  const expression = raw.trim().toLowerCase();
  if (expression === '') throw invalid(field, 'the expression is empty', raw);
  const { op, values } = splitExpression(expression);
  const operator = op ?? 's==';
  if (operator === '<range-in>')
    throw invalid(field, '<range-in> is not supported for root device hints', raw);
  if (!STRING_OPERATORS.has(operator))
    throw invalid(
      field,
      `operator ${operator} compares numbers; for strings use s==, s!=, s>=, s>, s<=, s<, <in>, <all-in> or <or>`,
      raw,
    );
  if (values.length === 0) throw invalid(field, `operator ${operator} has no value`, raw);
  if (operator === '<in>' && values.length > 1)
    throw invalid(
      field,
      '<in> takes one value; use <all-in> for several words or <or> for alternatives',
      raw,
    );
  const completes = operator === 's==' || operator === 's!=' || operator === '<or>';
  return {
    field,
    op: operator as StringOperator,
    values: completes ? values.map((value) => completePath(field, value)) : values,
    expression,
  };
};

/**
 * Checks and normalises hints. An unknown field, a value of the wrong type or a malformed
 * expression is INVALID_PARAMS naming the field; `{}` is no hints at all (IPA's default choice).
 */
export const parseRootDeviceHints = (
  hints: RootDeviceHints | Readonly<Record<string, unknown>>,
): ParsedHint[] => {
  const unknown = Object.keys(hints).filter((name) => !isHintField(name));
  if (unknown.length > 0)
    throw new AgentError(
      'INVALID_PARAMS',
      `unknown root device hint${unknown.length > 1 ? 's' : ''} ${unknown.map((name) => `"${name}"`).join(', ')}; valid hints are ${HINT_FIELDS.join(', ')}`,
      { details: { field: `root_device_hints.${unknown[0] ?? ''}`, unknown, valid: [...HINT_FIELDS] } },
    );
  return Object.entries(hints).map(([field, raw]) => {
    if (field === 'size') return parseSize(raw);
    if (field === 'rotational') return parseRotational(raw);
    return parseString(field as StringHintField, raw);
  });
};

const compareNumber = (op: NumberOperator, actual: number, wanted: readonly number[]): boolean => {
  const [value = Number.NaN] = wanted;
  switch (op) {
    case '==':
      return actual === value;
    case '!=':
      return actual !== value;
    // `=` is specs_matcher's legacy "at least".
    case '=':
    case '>=':
      return actual >= value;
    case '>':
      return actual > value;
    case '<=':
      return actual <= value;
    case '<':
      return actual < value;
    case '<or>':
      return wanted.includes(actual);
  }
};

const compareString = (op: StringOperator, actual: string, wanted: readonly string[]): boolean => {
  const [value = ''] = wanted;
  switch (op) {
    case 's==':
      return actual === value;
    case 's!=':
      return actual !== value;
    case 's>=':
      return actual >= value;
    case 's>':
      return actual > value;
    case 's<=':
      return actual <= value;
    case 's<':
      return actual < value;
    case '<in>':
      return actual.includes(value);
    case '<all-in>':
      return wanted.every((word) => actual.includes(word));
    case '<or>':
      return wanted.includes(actual);
  }
};

export const matchesHint = (subject: HintSubject, hint: ParsedHint): boolean => {
  if (hint.field === 'size') return compareNumber(hint.op, subject.size / GIB, hint.values);
  if (hint.field === 'rotational') return subject.rotational === hint.value;
  // IPA skips a disk whose attribute is empty, whatever the operator (even s!=).
  const actual = subject[hint.field]?.trim().toLowerCase() ?? '';
  if (actual === '') return false;
  return compareString(hint.op, actual, hint.values);
};

/** The first subject, in the order given (lsblk's), that matches every hint; null when none does. */
export const findFirstMatch = <T extends HintSubject>(
  subjects: readonly T[],
  hints: readonly ParsedHint[],
): T | null => subjects.find((subject) => hints.every((hint) => matchesHint(subject, hint))) ?? null;
