/**
 * A channel's members as a watcher holds them (docs/live-state.md "Presence"): pages of
 * `members`, then `presence_patch` frames applied by version. Pure logic: it is told what
 * arrived and answers what to ask for.
 *
 * While a listing is paged, patches are held; the first page's version is the list's.
 * Then each patch whose `version` is above the one held and whose `from` is at or below
 * it is applied (a change a later page already showed is applied again harmlessly: it
 * replaces its member); older ones are ignored; a gap (`from` above the version held) or
 * a `resync` starts a new listing.
 */

/** One member: a connection on the channel. */
export interface Member {
  /** The member's id (its connection). */
  readonly member: string;
  /** Its user. */
  readonly sub: string;
  /** What it says about itself. */
  readonly data?: unknown;
  /** When it entered or last updated, Unix ms. */
  readonly at: number;
}

/** A `members` page. */
export interface MembersPage {
  readonly version: number;
  readonly members: readonly Member[];
  readonly more: boolean;
  readonly next?: string;
}

/** A `presence_patch` frame. */
export interface PresencePatch {
  readonly from: number;
  readonly version: number;
  readonly patch?: { readonly [member: string]: Omit<Member, "member"> | null };
  readonly resync?: boolean;
}

/** What the view asks for after an input. */
export interface PresenceStep {
  /** The list changed: show it again. */
  readonly changed: boolean;
  /** Ask for the `members` page after this member (`""`: the first page), if set. */
  readonly list?: string;
}

/** One channel's members. */
export class PresenceView {
  #members = new Map<string, Member>();
  #version: number | undefined;
  #listing: { version: number | undefined; members: Map<string, Member>; held: PresencePatch[] } | undefined;

  /** The members, earliest first. */
  get members(): readonly Member[] {
    return [...this.#members.values()].sort((a, b) => a.at - b.at || a.member.localeCompare(b.member));
  }

  /** The presence version held (`undefined` until a listing finished). */
  get version(): number | undefined {
    return this.#version;
  }

  /** Starts a listing (after subscribing, a gap or a `resync`): ask for the first page. */
  relist(): PresenceStep {
    this.#listing = { version: undefined, members: new Map(), held: [] };
    return { changed: false, list: "" };
  }

  /** A `members` page of the listing under way. */
  page(page: MembersPage): PresenceStep {
    const listing = this.#listing;
    if (listing === undefined) {
      return { changed: false };
    }
    listing.version ??= page.version;
    for (const member of page.members) {
      listing.members.set(member.member, member);
    }
    if (page.more && page.next !== undefined) {
      return { changed: false, list: page.next };
    }
    this.#listing = undefined;
    this.#members = listing.members;
    this.#version = listing.version;
    for (const patch of listing.held) {
      const step = this.patch(patch);
      if (step.list !== undefined) {
        return step;
      }
    }
    return { changed: true };
  }

  /** A `presence_patch` frame. */
  patch(patch: PresencePatch): PresenceStep {
    if (this.#listing !== undefined) {
      this.#listing.held.push(patch);
      return { changed: false };
    }
    if (this.#version === undefined || patch.version <= this.#version) {
      return { changed: false };
    }
    if (patch.resync === true || patch.from > this.#version || patch.patch === undefined) {
      return this.relist();
    }
    for (const [member, value] of Object.entries(patch.patch)) {
      if (value === null) {
        this.#members.delete(member);
      } else {
        this.#members.set(member, { ...value, member });
      }
    }
    this.#version = patch.version;
    return { changed: true };
  }
}
