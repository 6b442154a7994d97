/** One page of a keyset-paged list, as the API answers it. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/**
 * The page after `opts.cursor` (the first without one), or with `opts.all` every page from there
 * on, followed by its `nextCursor`. The result's `nextCursor` is where a later call continues.
 */
export async function allPages<T>(
  fetchPage: (cursor: string | undefined) => Promise<{ body: Page<T> }>,
  opts: { cursor?: string | undefined; all?: boolean | undefined },
): Promise<Page<T>> {
  const items: T[] = [];
  let cursor = opts.cursor;
  let nextCursor: string | null;
  do {
    const { body } = await fetchPage(cursor);
    items.push(...body.items);
    nextCursor = body.nextCursor;
    cursor = nextCursor ?? undefined;
  } while (opts.all && cursor);
  return { items, nextCursor };
}
