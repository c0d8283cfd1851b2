/**
 * fetch refuses URLs with user info (`http://user:password@host`). A URL from the configuration that carries one
 * (a password-protected Ollama, a health endpoint behind basic auth) is split into the bare URL and a Basic
 * authorization header, so the password is sent as a header and never quoted in an error.
 */
export function withoutCredentials(url: URL): { url: URL; headers: Record<string, string> } {
  if (!url.username && !url.password) return { url, headers: {} };
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  const bare = new URL(url);
  bare.username = '';
  bare.password = '';
  return { url: bare, headers: { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` } };
}
