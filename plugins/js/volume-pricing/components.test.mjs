// End-to-end checks of the built plugin components, run in Node through `jco transpile`:
//
// - the JavaScript volume-pricing gives exactly the Rust volume-pricing's answers (quotes,
//   recommendations and error messages) over a table of requests and configs;
// - the Python lifecycle-segments gives exactly the Rust lifecycle-segments' tags over a
//   few hundred generated customers and configs;
// - the other Rust examples and the hostile fixtures that return (trap, bad-output,
//   log-flood, wrong-world) behave as documented across the component boundary.
//
// spin-forever and alloc-bomb are left to the host runtime's tests: Node has no deadline or
// memory limit to stop them.
//
//   npm test                                  (components from <repo>/target/plugins)
//   PLUGINS_OUT=/some/dir npm test
//
// `npm test` runs `node --experimental-wasm-extended-const --test components.test.mjs`: the
// Python component's core module uses extended constant expressions, which Node 20's V8
// only accepts behind that flag.
//
// The host imports (config, clock, log) are plain JS functions here; WASI comes from
// @bytecodealliance/preview2-shim with no folders, no environment and no network.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { transpile } from '@bytecodealliance/jco';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';

const here = dirname(fileURLToPath(import.meta.url));
const OUT = resolve(process.env.PLUGINS_OUT ?? resolve(here, '../../../target/plugins'));

const transpiled = new Map();

/** Transpiles `file` (relative to OUT) once and returns its `instantiate` and core-module loader. */
async function transpileOnce(file) {
  if (!transpiled.has(file)) {
    transpiled.set(file, (async () => {
      const bytes = await readFile(join(OUT, file));
      const { files } = await transpile(bytes, {
        name: 'plugin', instantiation: 'async', noTypescript: true, quiet: true,
      });
      const dir = await mkdtemp(join(tmpdir(), 'hephaestus-plugin-'));
      for (const [name, data] of Object.entries(files)) {
        await mkdir(dirname(join(dir, name)), { recursive: true });
        await writeFile(join(dir, name), data);
      }
      const { instantiate } = await import(pathToFileURL(join(dir, 'plugin.js')).href);
      const modules = new Map();
      const getCoreModule = (name) => {
        if (!modules.has(name)) modules.set(name, readFile(join(dir, name)).then((b) => WebAssembly.compile(b)));
        return modules.get(name);
      };
      return { instantiate, getCoreModule };
    })());
  }
  return transpiled.get(file);
}

/**
 * A fresh instance of plugin `file` with the given config and business clock. `host.logs`
 * collects [level, message] pairs; change `host.config`/`host.now` between calls freely.
 */
async function load(file, { config = {}, now = 0n } = {}) {
  const { instantiate, getCoreModule } = await transpileOnce(file);
  const host = { config: new Map(Object.entries(config)), now, logs: [] };
  const wasi = new WASIShim({ sandbox: { preopens: {}, env: {}, args: [], enableNetwork: false } });
  const imports = {
    ...wasi.getImportObject(),
    'hephaestus:plugins/config': {
      get: (key) => host.config.get(key),
      all: () => [...host.config.entries()],
    },
    'hephaestus:plugins/clock': { now: () => host.now },
    'hephaestus:plugins/log': { write: (level, message) => host.logs.push([level, message]) },
    'hephaestus:plugins/types': {},
  };
  const instance = await instantiate(getCoreModule, imports);
  return { instance, host };
}

/** { ok } or { err } of one call: a `result<_, string>` error arrives as a thrown payload. */
function outcome(call) {
  try {
    return { ok: call() };
  } catch (e) {
    if (e && typeof e === 'object' && 'payload' in e) return { err: e.payload };
    throw e;
  }
}

const money = (amountMinor, currency = 'USD') => ({ amountMinor: BigInt(amountMinor), currency });

const DAY = 86_400_000_000n;
const NOW = 1_750_000_000_000_000n;

function customer(overrides = {}) {
  return {
    id: 'cus_1',
    name: 'Ada Lovelace',
    emailDomain: 'example.com',
    createdAt: NOW - 400n * DAY,
    segments: [],
    lifetimeValue: money(0),
    monthlyRecurringRevenue: money(0),
    activity: {
      payments: 0,
      paymentsLast30Days: 0,
      failedPaymentsLast30Days: 0,
      lastPaymentAt: undefined,
      activeSubscriptions: 0,
      canceledSubscriptions: 0,
      hasPastDue: false,
    },
    attributes: [],
    ...overrides,
  };
}

// --- volume-pricing: Rust and JavaScript twins --------------------------------------------

const PRICING_CONFIGS = [
  {},
  { tier_1_quantity: '5', tier_1_discount_bp: '250', tier_3_quantity: '100', tier_3_discount_bp: '3000' },
  { loyalty_discount_bp: '0' },
  { loyalty_segment: 'vip', loyalty_discount_bp: '9000', tier_2_discount_bp: '5000' },
  { tier_1_quantity: ' +7 ', tier_2_quantity: '7' },
  { tier_1_discount_bp: 'ten' },
  { tier_2_quantity: '0' },
  { loyalty_discount_bp: '10001' },
];

function quoteRequests() {
  const out = [];
  for (const unit of [0, 1, 333, 999, 9700, 9995, 123_456_789]) {
    for (const quantity of [0, 1, 7, 9, 10, 11, 49, 50, 51, 100, 1000]) {
      for (const segments of [[], ['high_value'], ['vip', 'new']]) {
        for (const currency of ['USD', 'JPY']) {
          out.push({
            customer: customer({ segments }),
            productId: 'prod_1',
            productName: 'Seat',
            priceId: 'price_1',
            unitPrice: money(unit, currency),
            quantity,
            interval: quantity % 2 ? 'month' : undefined,
            context: [{ key: 'channel', value: 'web' }],
          });
        }
      }
    }
  }
  // Overflow and a negative unit price are errors in both.
  out.push({ ...out[0], unitPrice: money(2n ** 62n), quantity: 4 });
  out.push({ ...out[0], unitPrice: money(-5), quantity: 1 });
  return out;
}

const point = (price, customers, failed, revenue, currency = 'USD') => ({
  unitPrice: money(price, currency), customers, purchases: customers, failed, revenue: money(revenue, currency),
});

function recommendRequests() {
  const histories = [
    [],
    [point(12900, 80, 40, 1_032_000), point(9700, 100, 50, 970_000)],
    [point(9700, 100, 50, 970_000), point(12900, 80, 40, 1_032_000)],
    [point(9700, 0, 0, 0)],
    [point(9700, 10, 5, 0), point(8000, 10, 0, 80_000)],
    [point(9700, 3, 1, 29_100), point(9900, 3, 1, 29_100)],
    [point(9700, 3, 1, 29_100, 'EUR'), point(11000, 2, 2, 22_000)],
    [point(-100, 3, 1, 100), point(0, 3, 1, 100), point(15000, 1, 9, 15_000), point(9700, 7, 3, 67_900)],
  ];
  const out = [];
  for (const current of [9700, 1, 333, 0]) {
    for (const history of histories) {
      out.push({
        productId: 'prod_1', productName: 'Seat', currentPrice: money(current),
        customerSegment: current === 1 ? 'enterprise' : undefined, history,
      });
    }
  }
  return out;
}

test('volume-pricing: JavaScript twin answers exactly like Rust', async () => {
  const rust = await load('volume-pricing.wasm');
  const js = await load('volume-pricing-js.wasm');
  let compared = 0;
  for (const config of PRICING_CONFIGS) {
    for (const p of [rust, js]) p.host.config = new Map(Object.entries(config));
    for (const request of quoteRequests()) {
      const a = outcome(() => rust.instance.pricer.quote(request));
      const b = outcome(() => js.instance.pricer.quote(request));
      assert.deepEqual(b, a, `quote, config ${JSON.stringify(config)}, quantity ${request.quantity}, unit ${request.unitPrice.amountMinor}`);
      compared++;
    }
    for (const request of recommendRequests()) {
      const a = outcome(() => rust.instance.pricer.recommend(request));
      const b = outcome(() => js.instance.pricer.recommend(request));
      assert.deepEqual(b, a, `recommend, config ${JSON.stringify(config)}, current ${request.currentPrice.amountMinor}`);
      compared++;
    }
  }
  // Spot checks of the shared answers.
  for (const p of [rust, js]) p.host.config = new Map();
  const q = rust.instance.pricer.quote({ ...quoteRequests()[0], unitPrice: money(9700), quantity: 10 });
  assert.deepEqual(q, { amount: money(87300), discount: money(9700), reason: '10% volume discount for 10+ units' });
  assert.deepEqual(outcome(() => js.instance.pricer.quote({ ...quoteRequests()[0], quantity: 0 })),
    { err: 'quantity must be at least 1' });
  assert.ok(compared > 1000, `compared ${compared}`);
});

// --- lifecycle-segments: Rust and Python twins --------------------------------------------

/** A small deterministic generator (xorshift), so failures are reproducible. */
function rng(seed) {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s % n;
  };
}

function generatedCustomers(count) {
  const r = rng(42);
  const pick = (xs) => xs[r(xs.length)];
  const out = [];
  for (let i = 0; i < count; i++) {
    const paidEver = r(3) > 0;
    out.push(customer({
      id: `cus_${i}`,
      name: pick(['Ada Lovelace', undefined, 'Grace']),
      createdAt: NOW - BigInt(pick([0, 1, 29, 30, 31, 59, 60, 61, 400])) * DAY + BigInt(pick([-1, 0, 1])),
      lifetimeValue: money(pick([0, 499_999, 500_000, 500_001, 5_000, 5_001, 5_000_000, 5_000_001, -10]),
        pick(['USD', 'JPY', 'KWD', 'EUR'])),
      activity: {
        payments: paidEver ? r(40) + 1 : 0,
        paymentsLast30Days: pick([0, 1, 4, 5, 6, 12]),
        failedPaymentsLast30Days: pick([0, 1, 2, 3]),
        lastPaymentAt: paidEver ? NOW - BigInt(pick([0, 1, 30, 59, 60, 61, 90])) * DAY + BigInt(pick([-1, 0, 1])) : undefined,
        activeSubscriptions: pick([0, 1, 2, 3]),
        canceledSubscriptions: r(3),
        hasPastDue: r(5) === 0,
      },
      attributes: [
        ...(r(3) === 0 ? [{ key: 'plan', value: pick(['enterprise', 'Enterprise ', 'team', 'ENTERPRISE', 'enterprisé']) }] : []),
        ...(r(3) === 0 ? [{ key: 'seats', value: pick(['99', '100', '+100', ' 250 ', 'many', '-5', '1e3']) }] : []),
      ],
    }));
  }
  return out;
}

const SEGMENT_CONFIGS = [
  {},
  { new_days: '60', power_user_payments_30d: '12', at_risk_inactive_days: '30', high_value_major: '50' },
  { enterprise_plan: 'team', enterprise_seats: '250', power_user_subscriptions: '1', at_risk_failed_payments_30d: '3' },
  { new_days: '-5' },
  { new_days: 'a month' },
  { enterprise_seats: '-1' },
];

test('lifecycle-segments: Python twin tags exactly like Rust', async () => {
  const rust = await load('lifecycle-segments.wasm', { now: NOW });
  const py = await load('lifecycle-segments-py.wasm', { now: NOW });
  const customers = generatedCustomers(300);
  const seen = new Set();
  for (const config of SEGMENT_CONFIGS) {
    for (const p of [rust, py]) p.host.config = new Map(Object.entries(config));
    for (const c of customers) {
      const a = outcome(() => rust.instance.segmenter.segment(c));
      const b = outcome(() => py.instance.segmenter.segment(c));
      assert.deepEqual(b, a, `customer ${c.id}, config ${JSON.stringify(config)}`);
      for (const tag of a.ok ?? []) seen.add(tag);
    }
  }
  assert.deepEqual([...seen].sort(), ['at_risk', 'enterprise', 'high_value', 'new', 'power_user']);
  rust.host.config = new Map();
  assert.deepEqual(rust.instance.segmenter.segment(customer({ createdAt: NOW - DAY })), ['new']);
  rust.host.config = new Map([['new_days', 'a month']]);
  assert.match(outcome(() => rust.instance.segmenter.segment(customer())).err, /`new_days`/);
});

// --- the other examples -------------------------------------------------------------------

test('segment-subjects: subject by segment, first_name and segment variables', async () => {
  const { instance } = await load('segment-subjects.wasm', { config: { subject_new: 'Hi {first_name}, welcome aboard!' } });
  const request = (c) => ({
    customer: c,
    campaign: { id: 'cmp_1', name: 'Spring', template: 'newsletter', subject: 'Our spring news' },
    variables: [],
  });
  assert.deepEqual(instance.personalizer.personalize(request(customer({ segments: ['new', 'at_risk'] }))), {
    subject: 'Hi Ada, we miss you',
    variables: [{ key: 'first_name', value: 'Ada' }, { key: 'segment', value: 'at_risk' }],
  });
  assert.deepEqual(instance.personalizer.personalize(request(customer({ name: undefined, segments: ['new'] }))).subject,
    'Hi there, welcome aboard!');
  assert.equal(instance.personalizer.personalize(request(customer())).subject, undefined);
});

test('lifecycle-triggers: welcome and win-back', async () => {
  const { instance, host } = await load('lifecycle-triggers.wasm');
  const event = (kind, customerId = 'cus_1') => ({
    id: 'evt_1', kind, occurredAt: NOW, customerId, subjectId: 'sub_1', data: '{}',
  });
  const enqueue = (template, delaySeconds) => [{ tag: 'enqueue', val: { template, customerId: 'cus_1', delaySeconds } }];
  assert.deepEqual(instance.trigger.onEvent(event('customer.created'), undefined), enqueue('welcome', 0));
  assert.deepEqual(instance.trigger.onEvent(event('subscription.canceled'), customer()), enqueue('win_back', 604800));
  assert.deepEqual(instance.trigger.onEvent(event('payment.succeeded'), undefined), []);
  host.config = new Map([['win_back_delay_days', '14']]);
  assert.deepEqual(instance.trigger.onEvent(event('subscription.canceled'), undefined), enqueue('win_back', 14 * 86400));
});

// --- hostile fixtures that return ---------------------------------------------------------

const QUOTE = { ...quoteRequests()[0], unitPrice: money(9700), quantity: 3 };

test('hostile/trap traps in both modes', async () => {
  for (const mode of ['panic', 'unreachable']) {
    const { instance } = await load('hostile/trap.wasm', { config: { mode } });
    assert.throws(() => instance.pricer.quote(QUOTE), (e) => e instanceof WebAssembly.RuntimeError, mode);
  }
});

test('hostile/bad-output breaks the contract as configured', async () => {
  const { instance, host } = await load('hostile/bad-output.wasm');
  assert.equal(instance.pricer.quote(QUOTE).amount.amountMinor, -29100n);
  host.config = new Map([['mode', 'currency']]);
  assert.equal(instance.pricer.quote(QUOTE).amount.currency, 'ZZZ');
  host.config = new Map([['mode', 'discount']]);
  const q = instance.pricer.quote(QUOTE);
  assert.deepEqual([q.amount.amountMinor, q.discount.amountMinor], [29100n, 29101n]);
});

test('hostile/log-flood logs, then quotes the list price', async () => {
  const { instance, host } = await load('hostile/log-flood.wasm', { config: { lines: '3' } });
  assert.deepEqual(instance.pricer.quote(QUOTE), { amount: money(29100), discount: money(0), reason: 'list price' });
  assert.equal(host.logs.length, 3);
  assert.equal(host.logs[0][0], 'info');
});

test('hostile/wrong-world exports a segmenter, not a pricer', async () => {
  const { instance } = await load('hostile/wrong-world.wasm');
  assert.equal(instance.pricer, undefined);
  assert.deepEqual(instance.segmenter.segment(customer()), ['new']);
});
