/** Lenient JSON for small models' replies: top-level objects found in prose, and almost-JSON repaired. */

/** Top-level `{...}` spans of `text`, braces inside JSON strings ignored (quotes outside braces are prose). */
export function balancedObjects(text: string, limit = 8): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === '\\') escaped = true;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"' && depth > 0) inString = true;
    else if (c === '{') {
      if (depth === 0) start = i;
      depth++;
    } else if (c === '}' && depth > 0) {
      depth--;
      if (depth === 0) {
        out.push(text.slice(start, i + 1));
        if (out.length >= limit) break;
      }
    }
  }
  return out;
}

const DOUBLE_QUOTES = new Set(['"', '“', '”', '„', '‟', '″', '＂']);
const SINGLE_QUOTES = new Set(["'", '‘', '’', '‚', '‛', '′']);

/**
 * Best-effort repair of almost-JSON as small models write it: smart quotes, single-quoted strings, unquoted keys
 * and bare words, Python literals, comments, trailing commas, raw newlines in strings, and a reply cut short
 * (open string and brackets closed). Linear; the result may still be invalid, and is only ever JSON.parse'd.
 */
export function repairJson(input: string): string {
  let out = '';
  const stack: string[] = [];
  const n = input.length;
  /** Reads a string opened at `i`; a lenient (non-ASCII-double) quote closes only before `, } ] :` or the end. */
  const readString = (i: number, strict: boolean, closers: Set<string>): [string, number] => {
    let s = '';
    let j = i + 1;
    for (; j < n; j++) {
      const c = input[j]!;
      if (strict && c === '\\' && j + 1 < n) {
        const next = input[j + 1]!;
        if (next === 'u' && /^[0-9a-fA-F]{4}$/.test(input.slice(j + 2, j + 6))) {
          s += String.fromCharCode(parseInt(input.slice(j + 2, j + 6), 16));
          j += 5;
        } else {
          s += ({ n: '\n', t: '\t', r: '\r', b: '\b', f: '\f' } as Record<string, string>)[next] ?? next;
          j++;
        }
        continue;
      }
      if (closers.has(c)) {
        if (strict || /^\s*(?:[,}\]:]|$)/.test(input.slice(j + 1, j + 40))) return [s, j + 1];
      }
      s += c;
    }
    return [s, n];
  };
  /** Removes a comma (and the blanks after it) at the end of `out`; scans back over blanks only. */
  const dropTrailingComma = () => {
    let k = out.length - 1;
    while (k >= 0 && /\s/.test(out[k]!)) k--;
    if (out[k] === ',') out = out.slice(0, k);
  };
  const lastSignificant = () => {
    let k = out.length - 1;
    while (k >= 0 && /\s/.test(out[k]!)) k--;
    return k >= 0 ? out[k] : undefined;
  };
  /** The last token was a string right after `{` or `,` inside an object: a key still waiting for its value. */
  let danglingKey = false;
  const emitString = (value: string) => {
    const before = lastSignificant();
    out += JSON.stringify(value);
    danglingKey = stack[stack.length - 1] === '}' && (before === '{' || before === ',');
  };
  let i = 0;
  while (i < n) {
    const c = input[i]!;
    if (c === '"') {
      const [s, next] = readString(i, true, new Set(['"']));
      emitString(s);
      i = next;
    } else if (DOUBLE_QUOTES.has(c)) {
      const [s, next] = readString(i, false, DOUBLE_QUOTES);
      emitString(s);
      i = next;
    } else if (SINGLE_QUOTES.has(c)) {
      const [s, next] = readString(i, false, SINGLE_QUOTES);
      emitString(s);
      i = next;
    } else if (c === '/' && input[i + 1] === '/') {
      const end = input.indexOf('\n', i);
      i = end < 0 ? n : end;
    } else if (c === '/' && input[i + 1] === '*') {
      const end = input.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === '{' || c === '[') {
      stack.push(c === '{' ? '}' : ']');
      out += c;
      danglingKey = false;
      i++;
    } else if (c === '}' || c === ']') {
      dropTrailingComma();
      stack.pop();
      out += c;
      danglingKey = false;
      i++;
    } else if (/[A-Za-z_$]/.test(c)) {
      const word = /^[A-Za-z_$][\w$.-]*/.exec(input.slice(i, i + 200))![0];
      const literal = { true: 'true', false: 'false', null: 'null', True: 'true', False: 'false', None: 'null' }[word];
      if (literal) {
        out += literal;
        danglingKey = false;
      } else emitString(word);
      i += word.length;
    } else {
      out += c;
      if (!/\s/.test(c)) danglingKey = false;
      i++;
    }
  }
  // Cut short: a dangling key gets a null value, a dangling colon a null, trailing commas go, brackets close.
  if (danglingKey) out += ':null';
  else if (lastSignificant() === ':') out += 'null';
  dropTrailingComma();
  while (stack.length > 0) out += stack.pop();
  return out;
}
