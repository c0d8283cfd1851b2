/**
 * Untrusted text (document error messages, health-check bodies, anything the pipeline wrote) on its way to a
 * prompt, an audit row or an approver's screen: secrets redacted, length bounded, fence markers neutralized.
 * Pure string functions, linear in the input (every regular expression is anchored on a literal or bounded).
 */

/** What a redacted secret is replaced with. */
export const REDACTED = '[REDACTED]';

/** Object keys whose values are secrets whatever they hold (also lock tokens: no use to a diagnosis). */
export const SECRET_KEY_RE =
  /passw(?:or)?d|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|credential|session[_-]?id|private[_-]?key|cookie/i;

const PRIVATE_KEY_BLOCK = /-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|$)/g;
/** `scheme://user:password@host`: keeps the user, hides the password. */
const URL_PASSWORD = /\b([a-z][a-z0-9+.-]{0,30}:\/\/)([^\s:/?#@]{0,200}):([^\s/?#@]{1,500})@/gi;
const AUTH_SCHEME = /\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=-]{8,}/gi;
/** `password=...`, `"api_key": "..."`, `DB_PASSWORD: ...`, `token=...&`: the key stays, the value goes. */
const KEY_VALUE =
  /(["']?)([A-Za-z0-9_.-]{0,40}(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|credentials?|session[_-]?id|private[_-]?key)[A-Za-z0-9_.-]{0,40})\1(\s{0,5}[:=]\s{0,5})("[^"\n]{0,500}"|'[^'\n]{0,500}'|[^\s"'&,;}\]]{1,500})/gi;
const AWS_KEY_ID = /\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b/g;
const JWT = /\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g;
const VENDOR_TOKEN =
  /\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}|glpat-[A-Za-z0-9_-]{20,}|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}|npm_[A-Za-z0-9]{30,}|AIza[A-Za-z0-9_-]{35}|xapp-[A-Za-z0-9-]{10,})/g;
/** Webhook URLs whose path is the secret (Slack, Discord). */
const SECRET_URL_PATH =
  /\b(https?:\/\/(?:hooks\.slack\.com\/services|discord(?:app)?\.com\/api\/webhooks))\/[A-Za-z0-9_/-]{8,300}/gi;
/** `scheme://user@host` where the user part is a token (no password): the whole user part goes. */
const URL_TOKEN_USER = /\b([a-z][a-z0-9+.-]{0,30}:\/\/)([A-Za-z0-9_-]{20,200})@/gi;
/**
 * E-mail addresses (personal data; not needed for a diagnosis). Not the user part of a URL (`//user@host`, kept for
 * the host) and not already-redacted text.
 */
const EMAIL =
  /(?<![\w.%+\-/:@])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){1,8}[A-Za-z]{2,24}\b/g;

/**
 * Replaces credentials in free text: private keys, URL passwords (and token user parts), secret webhook URLs, bearer
 * tokens, key=value secrets, cloud and vendor keys, and e-mail addresses.
 */
export function redactSecrets(text: string): string {
  return text
    .replace(PRIVATE_KEY_BLOCK, `${REDACTED} private key`)
    .replace(URL_PASSWORD, `$1$2:${REDACTED}@`)
    .replace(URL_TOKEN_USER, `$1${REDACTED}@`)
    .replace(SECRET_URL_PATH, `$1/${REDACTED}`)
    .replace(AUTH_SCHEME, `$1$2${REDACTED}`)
    .replace(KEY_VALUE, (_m, q: string, key: string, sep: string, value: string) => {
      const quote = value.startsWith('"') || value.startsWith("'") ? value[0]! : '';
      return `${q}${key}${q}${sep}${quote}${REDACTED}${quote}`;
    })
    .replace(AWS_KEY_ID, REDACTED)
    .replace(JWT, REDACTED)
    .replace(VENDOR_TOKEN, REDACTED)
    .replace(EMAIL, `${REDACTED} e-mail`);
}

/** Cuts `text` to at most `max` UTF-16 units (never inside a surrogate pair) and says how much was cut. */
export function truncateText(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = Math.max(0, max);
  const code = text.charCodeAt(end - 1);
  if (end > 0 && code >= 0xd800 && code <= 0xdbff) end--;
  return `${text.slice(0, end)}…[${text.length - end} more chars]`;
}

/**
 * Makes untrusted text inert inside a fenced prompt block: no backticks (no code fences), no `<<<`/`>>>` runs
 * (our fence markers), no control characters other than newline and tab.
 */
export function neutralizeFences(text: string): string {
  return (
    text
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u0008\u000b-\u001f\u007f\u2028\u2029]/g, ' ')
      .replace(/`/g, "'")
      .replace(/<{2,}/g, '‹')
      .replace(/>{2,}/g, '›')
  );
}

/**
 * Untrusted text ready for a prompt or an audit row: cut to a bounded length first (so the expressions below
 * never see megabytes), secrets redacted, fences neutralized, then cut to `max` characters (default 500).
 */
export function sanitizeUntrusted(text: string, max = 500): string {
  const bounded = text.length > max * 4 + 2000 ? text.slice(0, max * 4 + 2000) : text;
  return truncateText(neutralizeFences(redactSecrets(bounded)), max);
}
