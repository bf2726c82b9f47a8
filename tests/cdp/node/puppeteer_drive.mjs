// Drive a Visual Runtime session's Chromium with puppeteer-core, unchanged:
// puppeteer.connect({browserWSEndpoint, headers}). Prints one JSON line.
import puppeteer from 'puppeteer-core';

const [endpoint, token, url] = process.argv.slice(2);
const browser = await puppeteer.connect({
  browserWSEndpoint: endpoint,
  headers: { Authorization: `Bearer ${token}` },
  defaultViewport: null,
});
const pages = await browser.pages();
const page = pages.find((p) => !p.url().startsWith('chrome')) ?? await browser.newPage();
await page.goto(url);
await page.type('#name', 'puppeteer');
await page.click('#go');
await page.waitForFunction(() => document.getElementById('out').textContent !== '');
const out = await page.$eval('#out', (e) => e.textContent);
const png = await page.screenshot({ type: 'png' });
const version = await browser.version();
await browser.disconnect();
console.log(JSON.stringify({ out, version, pngMagic: Buffer.from(png).subarray(0, 4).toString('hex') }));
