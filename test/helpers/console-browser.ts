import fs from 'node:fs';
import path from 'node:path';
import { AxeBuilder } from '@axe-core/playwright';
import type { Browser, Locator, Page } from 'playwright-core';
import { expect } from 'vitest';
import { findChromium } from '../infra/chromium.js';
import { skipReason } from '../infra/engines.js';
import type { TestServer } from './test-server.js';

/** Where the console's browser tests write their screenshots (CI keeps the folder). */
export const SHOTS = path.resolve(import.meta.dirname, '../../test-results/console');

/** Debian's Chromium, and why a console browser test skips without one. */
export function consoleBrowser(what: string): {
  executablePath: string | undefined;
  reason: string | undefined;
} {
  const executablePath = findChromium();
  return {
    executablePath,
    reason: skipReason(
      what,
      executablePath
        ? undefined
        : 'no Chromium found (apt-get install chromium-headless-shell, or set TENANTRY_CHROMIUM)',
    ),
  };
}

/** Waits until the locator's text contains (or matches) `want`. */
export async function text(loc: Locator, want: string | RegExp, timeout = 10_000): Promise<void> {
  await expect
    .poll(async () => ((await loc.count()) > 0 ? ((await loc.first().textContent()) ?? '') : ''), { timeout })
    .toMatch(want);
}

/** No serious or critical axe-core violation on the page as it is now; then its screenshot. */
export async function accessible(page: Page, name: string): Promise<void> {
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  expect(
    bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join('; ')})`),
    name,
  ).toEqual([]);
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** A new browser context signed in with the server's one-time link (a platform administrator). */
export async function signedInAsAdmin(browser: Browser, s: TestServer): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(await s.app.tenantryConsole.signInLink(s.url));
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL('**/console/tree');
  return page;
}

/** A new browser context signed in with an access token (a tenant's principal, say). */
export async function signedInWithToken(browser: Browser, s: TestServer, token: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${s.url}/console/login`);
  await page.getByLabel('Access token').fill(token);
  await page.getByRole('button', { name: 'Sign in with token' }).click();
  await page.waitForURL('**/console/tree');
  return page;
}
