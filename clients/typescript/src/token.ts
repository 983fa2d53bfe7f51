/** Tokens: where the handshake carries them, and when they expire. */

/** Gives a token for the next connection; called again for every (re)connect. */
export type TokenProvider = () => string | Promise<string>;

/** The subprotocol the server answers with when the token travels as a subprotocol. */
export const SUBPROTOCOL = "deltacast.v1";

/**
 * The URL and subprotocols of a handshake carrying `token`: in the `token` query
 * parameter, or (`"subprotocol"`, what browsers need to keep it out of URLs) as
 * `bearer.<token>` beside `deltacast.v1`.
 */
export function handshake(
  url: string,
  token: string,
  carry: "query" | "subprotocol",
): { url: string; protocols: string[] | undefined } {
  if (carry === "subprotocol") {
    return { url, protocols: [SUBPROTOCOL, `bearer.${token}`] };
  }
  const separator = url.includes("?") ? "&" : "?";
  return { url: `${url}${separator}token=${encodeURIComponent(token)}`, protocols: undefined };
}

/** A JWT's `exp` in Unix ms, or `undefined` when it has none or is not a JWT. */
export function expiresAt(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) {
    return undefined;
  }
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    const exp = (claims as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
