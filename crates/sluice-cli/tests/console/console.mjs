// Drives the sluice console in headless Chromium (Debian's package, never a downloaded browser)
// with playwright-core: node console.mjs URL SCREENSHOT_DIR. Prints one JSON line of findings.
import { chromium } from "playwright-core";

const [url, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.SLUICE_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const out = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(20000);
  await page.goto(url);
  // Tables: the table and its partitions.
  const card = page.locator('.table-card[data-table="employment"]');
  await card.waitFor();
  out.tables = await page.locator(".table-card h2").allTextContents();
  out.partitions = await card.locator("table").nth(1).locator("tr td:first-child").allTextContents();
  await page.screenshot({ path: `${shots}/tables.png`, fullPage: true });
  // History of the table.
  await card.getByText("Commit history").click();
  await card.locator("table").nth(2).waitFor();
  out.history_rows = await card.locator("table").nth(2).locator("tr").count() - 1;
  // SQL: the result as a table and a chart.
  await page.click("#nav-sql");
  await page.fill("#sql", "SELECT year, count(*) AS months, avg(nonfarm) AS jobs FROM employment GROUP BY year ORDER BY year");
  await page.click("#run");
  await page.locator("#result table").waitFor();
  out.sql_rows = await page.locator("#result table tr").count() - 1;
  out.sql_first = await page.locator("#result table tr").nth(1).locator("td").allTextContents();
  out.chart_bars = await page.locator("#chart-svg rect").count();
  await page.screenshot({ path: `${shots}/sql.png`, fullPage: true });
  // DDL is refused.
  await page.fill("#sql", "DROP TABLE employment");
  await page.click("#run");
  await page.locator("#error:not(:empty)").waitFor();
  out.refused = await page.textContent("#error");
  await page.screenshot({ path: `${shots}/refused.png`, fullPage: true });
  // Queues and the quarantine.
  await page.click("#nav-queues");
  await page.locator(".queue-card").first().waitFor();
  out.queues = await page.locator(".queue-card h2").allTextContents();
  await page.screenshot({ path: `${shots}/queues.png`, fullPage: true });
  await page.click("#nav-quarantine");
  await page.locator("#view-quarantine table").waitFor();
  out.quarantine_rows = await page.locator("#view-quarantine table tr").count() - 1;
  out.quarantine_text = await page.textContent("#view-quarantine");
  await page.screenshot({ path: `${shots}/quarantine.png`, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
