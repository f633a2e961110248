// The registry console in headless Chromium, against a real followup-server on 127.0.0.1 and a
// real device (the `followup device` CLI). Run by scripts/browser-test.sh, which starts the
// server and passes its address, the admin's password and the CLI's path in the environment.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const BASE = process.env.CONSOLE_URL;
const ADMIN_EMAIL = process.env.ADMIN_EMAIL;
const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD;
const FOLLOWUP = process.env.FOLLOWUP_BIN;
const DATA = process.env.REGISTRY_DATA;
const SHOTS = process.env.SCREENSHOTS;
mkdirSync(SHOTS, { recursive: true });

let passed = 0, failed = 0;
function check(cond, what) {
  if (cond) { passed++; console.log(`ok - ${what}`); }
  else { failed++; console.log(`not ok - ${what}`); }
}

const work = mkdtempSync(join(tmpdir(), 'followup-browser-'));
function device(args) {
  return execFileSync(FOLLOWUP, ['device', '--store', join(work, 'tablet.db'), ...args], {
    env: { ...process.env, FOLLOWUP_PASSPHRASE: 'browser test passphrase' }, encoding: 'utf8', timeout: 60000,
  });
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const ctx = await browser.newContext();
  ctx.setDefaultTimeout(15000);
  const page = await ctx.newPage();

  // A wrong password is refused.
  await page.goto(`${BASE}/console/login`);
  await page.getByLabel('Email').fill(ADMIN_EMAIL);
  await page.getByLabel('Password').fill('not the password at all');
  await page.getByRole('button', { name: 'Sign in' }).click();
  check((await page.textContent('body')).includes('Wrong email, password or code'), 'wrong password refused');

  // The admin signs in (the Secure cookie is kept over http://127.0.0.1).
  await page.getByLabel('Email').fill(ADMIN_EMAIL);
  await page.getByLabel('Password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${BASE}/console`);
  check((await page.textContent('h1')).startsWith('Overview'), 'admin signed in, overview shown');
  const cookies = await ctx.cookies();
  const session = cookies.find(c => c.name === 'followup_session');
  check(session && session.httpOnly && session.secure && session.sameSite === 'Strict', 'session cookie HttpOnly, Secure, SameSite=Strict');

  // Invite two clinics; issue a tablet code for the first.
  async function invite(name) {
    await page.goto(`${BASE}/console/clinics`);
    await page.getByLabel('Clinic name').fill(name);
    await page.getByLabel('Country (ISO code, e.g. MX)').fill('MX');
    await page.getByRole('button', { name: 'Invite' }).click();
    await page.getByRole('link', { name }).click();
    return page.url().split('/').pop();
  }
  const clinicA = await invite('Clinica Aurora');
  const clinicB = await invite('Clinica Boreal');
  check(/^[0-9a-f]{32}$/.test(clinicA) && /^[0-9a-f]{32}$/.test(clinicB), 'clinics invited');
  await page.goto(`${BASE}/console/clinics/${clinicA}`);
  await page.getByRole('button', { name: 'Code for a clinic tablet' }).click();
  const code = (await page.textContent('#enrolment-code')).trim();
  check(/^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$/.test(code), `tablet code shown (${code})`);
  check(await page.locator('.qr svg').count() === 1, 'tablet code shown as a QR code');
  await page.screenshot({ path: join(SHOTS, 'clinic-code.png'), fullPage: true });

  // A device enrols with the code, records a patient, a procedure, a response and an AE, syncs.
  device(['init']);
  device(['enrol', '--server', BASE, '--code', code]);
  device(['add-patient', '--study-code', 'BR-1', '--birth-year', '1961', '--sex', 'female', '--consent-date', '2026-01-05']);
  writeFileSync(join(work, 'procedure.json'), JSON.stringify({
    date: '2026-01-05', condition: 'knee osteoarthritis', procedure_type: 'cell injection', route: 'intra_articular',
    cell_type: 'mesenchymal', source_tissue: 'adipose', origin: 'autologous', manipulation: 'minimal',
    regulatory_status: 'unregulated', trial_registration: null, promised_benefits: [], cost: null }));
  device(['add-procedure', '--patient', 'BR-1', '--file', join(work, 'procedure.json')]);
  writeFileSync(join(work, 'answers.json'), JSON.stringify({
    visit_date: '2026-01-12', visit_mode: 'in_person', condition_status: 'improved', symptom_primary: 3,
    symptom_pain: 2, symptom_fatigue: 4, ecog: '1', complications_any: false, hospitalised: false,
    further_cell_therapy: false }));
  device(['fill', '--patient', 'BR-1', '--questionnaire', 'clinician-followup', '--visit', 'd7', '--answers', join(work, 'answers.json')]);
  device(['report-ae', '--patient', 'BR-1', '--category', 'infection', '--onset', '2026-01-20', '--severity', '3', '--description', 'redness at the injection site']);
  const sync = device(['sync']);
  check(/4/.test(sync), 'device synced its records');

  // The console shows them.
  await page.goto(`${BASE}/console`);
  const overview = await page.textContent('main');
  check(/Patients\s*1/.test(overview) && /Adverse events\s*1/.test(overview), 'overview counts the patient and the adverse event');
  check(await page.locator('svg.chart').count() === 2, 'overview has two server-rendered SVG charts');
  await page.screenshot({ path: join(SHOTS, 'overview.png'), fullPage: true });
  await page.goto(`${BASE}/console/adverse-events`);
  check((await page.textContent('main')).includes('infection') && (await page.textContent('main')).includes('grade 3'), 'adverse event in the queue');
  await page.screenshot({ path: join(SHOTS, 'adverse-events.png'), fullPage: true });
  check(await page.locator('td.case-open').count() === 1, 'the queue shows the registry case, open');
  await page.getByRole('link', { name: 'infection' }).click();
  check((await page.textContent('#case-state')).trim() === 'open', 'the event page shows the case state (open)');
  const deadline = new Date(Date.now() + 7 * 86400000).toISOString().slice(0, 10);
  check((await page.textContent('main')).includes(deadline), `the event page shows the server-set deadline (${deadline})`);
  await page.getByLabel('Kind').selectOption('escalation');
  await page.getByLabel('Text').fill('Grade 3 infection: please adjudicate this week.');
  await page.getByRole('button', { name: 'Add' }).click();
  check((await page.textContent('main')).includes('please adjudicate this week'), 'admin escalates the adverse event');
  check((await page.textContent('#case-state')).trim() === 'escalated', 'the case is escalated');
  check((await page.textContent('#case-entries')).includes('escalated by the registry: Grade 3 infection'), 'the escalation note is in the case');
  await page.screenshot({ path: join(SHOTS, 'adverse-event.png'), fullPage: true });
  await page.goto(`${BASE}/console/patients?code=BR-1`);
  const timeline = await page.textContent('main');
  check(timeline.includes('Patient BR-1') && timeline.includes('Procedure on 2026-01-05') && timeline.includes('Response clinician-followup'), 'patient timeline shows procedure and response');
  await page.screenshot({ path: join(SHOTS, 'timeline.png'), fullPage: true });
  await page.goto(`${BASE}/console/followup`);
  await page.screenshot({ path: join(SHOTS, 'followup.png'), fullPage: true });
  await page.goto(`${BASE}/console/clinics`);
  check((await page.textContent('main')).includes('Clinica Aurora'), 'clinics page lists the clinic');
  await page.screenshot({ path: join(SHOTS, 'clinics.png'), fullPage: true });
  await page.goto(`${BASE}/console/devices`);
  check((await page.locator('main table tbody tr').count()) === 1, 'devices page lists the tablet');
  await page.screenshot({ path: join(SHOTS, 'devices.png'), fullPage: true });
  await page.goto(`${BASE}/console/audit?verify=1`);
  check(await page.locator('#audit-ok').count() === 1, 'audit chain verifies');
  await page.screenshot({ path: join(SHOTS, 'audit.png'), fullPage: true });

  // The export download button: a zip for the admin.
  await page.goto(`${BASE}/console/export`);
  await page.getByLabel('Format').selectOption('csv');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Download' }).click(),
  ]);
  const zipPath = join(work, 'export.zip');
  await download.saveAs(zipPath);
  const zip = readFileSync(zipPath);
  check(download.suggestedFilename().endsWith('.zip') && zip.subarray(0, 2).toString() === 'PK', `admin downloads an export (${download.suggestedFilename()}, ${zip.length} bytes)`);
  await page.goto(`${BASE}/console/export`);
  await page.screenshot({ path: join(SHOTS, 'export.png'), fullPage: true });

  // A form posted without its CSRF token is refused: the real invite form, in the signed-in
  // browser, with its hidden token removed.
  await page.goto(`${BASE}/console/clinics`);
  await page.evaluate(() => document.querySelectorAll('main input[name="csrf"]').forEach(e => e.remove()));
  await page.getByLabel('Clinic name').fill('Forged Clinic');
  await page.getByLabel('Country (ISO code, e.g. MX)').fill('MX');
  const [forged] = await Promise.all([
    page.waitForResponse(r => r.url() === `${BASE}/console/clinics` && r.request().method() === 'POST'),
    page.getByRole('button', { name: 'Invite' }).click(),
  ]);
  check(forged.status() === 403 && (await page.textContent('h1')).startsWith('Form refused'), 'form without CSRF token refused (403)');
  await page.goto(`${BASE}/console/clinics`);
  check(!(await page.textContent('main')).includes('Forged Clinic'), 'the refused form changed nothing');

  // A coordinator of clinic A: 403 on B's pages and no B data anywhere.
  const out = execFileSync(FOLLOWUP, ['server', 'add-staff', '--data', DATA, '--email', 'coord@aurora.example', '--role', 'coordinator', '--clinic', clinicA], { encoding: 'utf8' });
  const coordPassword = out.match(/password[^:]*: (\S+)/)[1];
  const cctx = await browser.newContext();
  const cpage = await cctx.newPage();
  await cpage.goto(`${BASE}/console/login`);
  await cpage.getByLabel('Email').fill('coord@aurora.example');
  await cpage.getByLabel('Password').fill(coordPassword);
  await cpage.getByRole('button', { name: 'Sign in' }).click();
  await cpage.waitForURL(`${BASE}/console`);
  const r = await cpage.goto(`${BASE}/console/clinics/${clinicB}`);
  check(r.status() === 403, 'coordinator gets 403 on clinic B');
  const r2 = await cpage.goto(`${BASE}/console/adverse-events?clinic=${clinicB}`);
  check(r2.status() === 403, 'coordinator gets 403 on clinic B adverse events');
  let leaks = 0;
  for (const p of ['/console', '/console/clinics', '/console/followup', '/console/adverse-events', '/console/devices', `/console/clinics/${clinicA}`]) {
    await cpage.goto(`${BASE}${p}`);
    const html = await cpage.content();
    if (html.includes('Boreal') || html.includes(clinicB)) { leaks++; console.log(`  leak on ${p}`); }
  }
  check(leaks === 0, 'coordinator sees no clinic B data anywhere');
  check((await (await cpage.goto(`${BASE}/console/adverse-events`)).text()).includes('infection'), 'coordinator sees its own clinic\'s adverse event');
  // The export form offers only its clinic; the same form pointed at clinic B is refused.
  await cpage.goto(`${BASE}/console/export`);
  const options = await cpage.locator('#clinic option').allTextContents();
  check(options.length === 1 && options[0] === 'Clinica Aurora', 'coordinator may export only its clinic');
  await cpage.evaluate((b) => { document.querySelector('#clinic option').value = b; }, clinicB);
  const [refused] = await Promise.all([
    cpage.waitForResponse(r => r.url() === `${BASE}/console/export` && r.request().method() === 'POST'),
    cpage.getByRole('button', { name: 'Download' }).click(),
  ]);
  check(refused.status() === 403, 'coordinator export of clinic B refused (403)');

  // The public page, no login: the clinic that never enrolled a device, with its rule.
  const pub = await browser.newPage();
  await pub.goto(`${BASE}/participation`);
  const section = await pub.locator('section', { hasText: 'Invited clinics that do not participate' }).textContent();
  check(section.includes('Clinica Boreal'), 'public page lists the clinic that never enrolled a device');
  check((await pub.textContent('main')).includes('The rules'), 'public page shows the rules');
  await pub.screenshot({ path: join(SHOTS, 'participation.png'), fullPage: true });

  // Pages are small.
  const sizes = [];
  for (const p of ['/console', '/console/clinics', '/console/followup', '/console/adverse-events', `/console/clinics/${clinicA}`]) {
    const resp = await page.goto(`${BASE}${p}`);
    check(resp.status() === 200, `${p} renders for the admin`);
    sizes.push((await resp.body()).length);
  }
  check(Math.max(...sizes) < 100000, `pages under 100 KB (largest ${Math.max(...sizes)} bytes)`);
} catch (e) {
  failed++;
  console.log(`not ok - ${e.stack || e}`);
} finally {
  await browser.close();
  rmSync(work, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
