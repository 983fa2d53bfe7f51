/** Message ids the client makes: unique, and valid ids for the protocol (A-Z a-z 0-9 _ - : .). */

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** A random id of `length` (22 gives 131 bits) characters, from `crypto.getRandomValues`. */
export function newId(length = 22): string {
  const bytes = new Uint8Array(length);
  globalThis.crypto.getRandomValues(bytes);
  let id = "";
  for (const byte of bytes) {
    id += ALPHABET[byte % ALPHABET.length];
  }
  return id;
}
