/** RFC 3339 UTC, the only time format on the wire. */
export const rfc3339 = (date: Date = new Date()): string => date.toISOString();
