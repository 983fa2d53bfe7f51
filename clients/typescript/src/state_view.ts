/**
 * A state channel's document as a client holds it (docs/live-state.md "Watching"): a
 * snapshot, then merge patches applied in version order. Pure logic: it is told what
 * arrived and answers whether the document changed, or whether to ask for a snapshot.
 *
 * - A `state` frame whose version is above the one held replaces the document.
 * - A `patch` of the next version is applied (RFC 7396); one at or below is old news; one
 *   further ahead means one was lost (or came before the snapshot): ask `state`.
 */

/** An operation of an `update` (docs/live-state.md): paths are JSON Pointers. */
export type StateOp =
  | { readonly op: "inc"; readonly path: string; readonly by: number }
  | { readonly op: "set"; readonly path: string; readonly value: unknown }
  | { readonly op: "remove"; readonly path: string }
  | { readonly op: "merge"; readonly path: string; readonly patch: unknown };

/** A JSON object. */
export type JsonObject = { readonly [key: string]: unknown };

/** What a frame did to the document. */
export type StateStep = "changed" | "unchanged" | "snapshot_needed";

/** Applies an RFC 7396 merge patch to `target`, leaving both untouched. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) {
    return patch;
  }
  const result: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete result[key];
    } else {
      result[key] = mergePatch(result[key], value);
    }
  }
  return result;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** One state channel's document. */
export class StateView {
  #version: number | undefined;
  #value: JsonObject = {};

  /** The version held (`undefined` before the first snapshot). */
  get version(): number | undefined {
    return this.#version;
  }

  /** The document held. */
  get value(): JsonObject {
    return this.#value;
  }

  /** A `state` frame: the whole document at `version`. */
  snapshot(version: number, value: unknown): StateStep {
    if (this.#version !== undefined && version <= this.#version) {
      return "unchanged";
    }
    this.#version = version;
    this.#value = isObject(value) ? value : {};
    return "changed";
  }

  /** A `patch` frame: from `version - 1` to `version`. */
  patch(version: number, patch: unknown): StateStep {
    if (this.#version === undefined) {
      return "snapshot_needed";
    }
    if (version <= this.#version) {
      return "unchanged";
    }
    if (version > this.#version + 1) {
      return "snapshot_needed";
    }
    this.#version = version;
    const merged = mergePatch(this.#value, patch);
    this.#value = isObject(merged) ? merged : {};
    return "changed";
  }
}
