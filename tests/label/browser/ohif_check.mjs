// Headless-Chromium check of MONAI Label's bundled OHIF with the pneumonitor app.
//
//   node ohif_check.mjs SERVER_URL STUDY_UID SERIES_UID OUT_DIR
//
// Opens the study in OHIF's MONAI Label mode, opens the MONAI Label panel, runs the `pneumonia` auto-segmentation
// and takes screenshots. Writes OUT_DIR/ohif_check.json: one entry per step {step, ok, detail}, plus the browser
// console errors and the server requests seen, so that a failing step says exactly what failed.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const [server, study, series, outDir] = process.argv.slice(2);
fs.mkdirSync(outDir, { recursive: true });
const report = { server, study, series, steps: [], console: [], requests: [] };
const step = (name, ok, detail = '') => { report.steps.push({ step: name, ok, detail }); console.log(`${ok ? 'ok  ' : 'FAIL'} ${name} ${detail}`); };
const save = () => fs.writeFileSync(path.join(outDir, 'ohif_check.json'), JSON.stringify(report, null, 2));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--use-gl=swiftshader', '--enable-unsafe-swiftshader'],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
page.on('console', (m) => { if (m.type() === 'error') report.console.push(m.text().slice(0, 500)); });
page.on('pageerror', (e) => report.console.push(`pageerror: ${String(e).slice(0, 500)}`));
page.on('request', (r) => { if (!/\.(js|css|wasm|svg|png|woff2?)$/.test(r.url())) report.requests.push(`${r.method()} ${r.url().replace(server, '')}`); });

try {
  const viewer = `${server}/ohif/viewer?StudyInstanceUIDs=${study}`;
  await page.goto(viewer, { waitUntil: 'domcontentloaded', timeout: 60000 });
  try {
    await page.waitForSelector('canvas', { timeout: 60000 });
    await page.waitForTimeout(4000);
    await page.locator('button:has-text("Confirm and Hide")').first().click({ timeout: 3000 }).catch(() => {});
    step('stack-viewer', true, 'the DX is displayed by OHIF\'s basic viewer (stack viewport)');
  } catch (e) {
    step('stack-viewer', false, `no canvas: ${e.message.split('\n')[0]}`);
  }
  await page.screenshot({ path: path.join(outDir, 'ohif_0_viewer.png') });
  const url = `${server}/ohif/monai-label?StudyInstanceUIDs=${study}`;
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 60000 });
  step('open', true, url);
  // the viewport's canvas appears once the series is loaded
  try {
    await page.waitForSelector('canvas', { timeout: 30000 });
    await page.waitForTimeout(5000);
    step('viewport', true, 'a cornerstone canvas is on the page');
  } catch (e) {
    step('viewport', false, `no canvas: ${e.message.split('\n')[0]}`);
  }
  await page.locator('button:has-text("Confirm and Hide")').first().click({ timeout: 3000 }).catch(() => {});
  await page.screenshot({ path: path.join(outDir, 'ohif_1_study.png') });
  // the panel's server address defaults to http://127.0.0.1:8000/: point it at this server and connect
  const input = page.locator('input[type="text"]').filter({ hasNot: page.locator('xx') }).first();
  const serverInput = page.locator('input').and(page.locator('[value*="http"]')).first();
  if (await serverInput.count()) {
    await serverInput.fill(`${server}/`);
    const infoDone = page.waitForResponse((r) => r.url().startsWith(`${server}/info`), { timeout: 30000 }).catch(() => null);
    await serverInput.locator('xpath=following::button[1]').click().catch(() => {});
    const info = await infoDone;
    step('connect', !!info && info.status() === 200, info ? `GET /info/ HTTP ${info.status()}` : 'no /info/ request');
  } else {
    step('connect', false, 'no server address field in the MONAI Label panel');
  }
  await page.waitForTimeout(3000);
  const body = await page.locator('body').innerText();
  step('monai-label-panel', /MONAI Label/i.test(body), 'panel title visible');
  // an error box of OHIF (error boundary): keep its details for the report
  const details = page.locator('button:has-text("Show Details")').first();
  if (await details.count()) {
    await details.click().catch(() => {});
    await page.waitForTimeout(1000);
    report.ohif_error = (await page.locator('body').innerText()).slice(-3000);
    step('no-ohif-error', false, report.ohif_error.split('\n').filter((l) => /error|wrong|Cannot|undefined/i.test(l)).slice(0, 5).join(' | '));
  }
  await page.screenshot({ path: path.join(outDir, 'ohif_2_panel.png') });
  const connected = await page.locator('body').innerText();
  step('server-info', /pneumonia/i.test(connected), 'the panel lists the pneumonia model');
  // Auto-Segmentation: choose the model and run
  const auto = page.locator('text=Auto-Segmentation').first();
  if (await auto.count()) { await auto.click().catch(() => {}); }
  const select = page.locator('select').filter({ hasText: 'pneumonia' }).first();
  if (await select.count()) { await select.selectOption('pneumonia').catch(() => {}); }
  const run = page.locator('button:has-text("Run")').first();
  if (await run.count()) {
    const inferDone = page.waitForResponse((r) => r.url().includes('/infer/pneumonia'), { timeout: 20000 }).catch(() => null);
    await run.click();
    const response = await inferDone;
    step('infer-request', !!response && response.status() === 200, response ? `HTTP ${response.status()}` : 'no /infer/pneumonia request');
    await page.waitForTimeout(6000);
    const text = await page.locator('body').innerText();
    const success = /Running Segmentation - Successful/i.test(text);
    step('segmentation-drawn', !!response && response.status() === 200 && success,
         success ? 'OHIF reported a successful segmentation' : 'no success notification from OHIF');
  } else {
    step('infer-request', false, 'no Run button in the MONAI Label panel');
  }
  await page.screenshot({ path: path.join(outDir, 'ohif_3_segmentation.png') });
} catch (e) {
  step('exception', false, String(e).split('\n')[0]);
  await page.screenshot({ path: path.join(outDir, 'ohif_error.png') }).catch(() => {});
} finally {
  save();
  await browser.close();
}
process.exit(report.steps.every((s) => s.ok) ? 0 : 1);
