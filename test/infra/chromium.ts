import fs from 'node:fs';

/**
 * Debian's Chromium for the console's browser tests (Playwright cannot download browsers here):
 * TENANTRY_CHROMIUM, else the headless shell or the full browser where the Debian packages put them.
 */
export function findChromium(): string | undefined {
  const candidates = [
    process.env.TENANTRY_CHROMIUM,
    '/usr/bin/chromium-headless-shell',
    '/usr/lib/chromium/chromium-headless-shell',
    '/usr/bin/chromium',
    '/usr/lib/chromium/chromium',
  ];
  return candidates.find((p): p is string => !!p && fs.existsSync(p));
}
