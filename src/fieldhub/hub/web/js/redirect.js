// Where a page may send the browser after a login: a path on this hub, never another site.

/**
 * ``target`` as a path of ``origin`` (path, query and fragment), or null when it is not one.
 *
 * Prefix checks are not enough: browsers drop tabs and newlines from addresses and read a
 * backslash as a slash, so "/\t/evil.example" or "/\\evil.example" become "//evil.example",
 * another site. So anything with a control character or a backslash is refused outright, and
 * the rest is parsed the way the browser will parse it and kept only if it stays on ``origin``.
 */
export function sameOriginPath(target, origin = location.origin) {
  const unsafe = /[\u0000-\u001f\u007f\\]/; // control characters (C0, DEL) and backslash
  if (typeof target !== "string" || !target.startsWith("/") || unsafe.test(target)) return null;
  let url;
  try {
    url = new URL(target, origin);
  } catch {
    return null;
  }
  return url.origin === origin ? url.pathname + url.search + url.hash : null;
}
