// JavaScript twin of plugins/examples/volume-pricing (world `pricing`): the same tiers,
// loyalty discount, recommendation rule, rounding and reason texts, so both plugins give
// the same answer to the same request.
//
// How componentize-js maps the WIT types used here:
// - record fields are camelCase (`unit-price` → `unitPrice`);
// - `s64` (money amounts, timestamps) is a BigInt both ways: all money maths below is BigInt
//   maths, never Number, so nothing is rounded behind our back;
// - `u32`/`s32` are Numbers; `option<T>` is the value or `undefined`;
// - `result<T, string>`: return T for `ok`; throw a string for `err` (the thrown value is
//   the error payload, so it must be a string, not an Error object).

import { get as configGet } from 'hephaestus:plugins/config@0.1.0';

const BASIS_POINTS = 10000n;
const I64_MAX = (1n << 63n) - 1n;
const I32_MIN = -(1n << 31n);
const I32_MAX = (1n << 31n) - 1n;
const U32_MAX = (1n << 32n) - 1n;
const MAX_TIERS = 9;

// --- integer money maths (mirrors hephaestus_plugin_sdk::money) --------------------------

/** numerator / denominator rounded half away from zero; null when denominator is 0. */
function divRoundHalfUp(numerator, denominator) {
  if (denominator === 0n) return null;
  let n = numerator;
  let d = denominator;
  if (d < 0n) {
    n = -n;
    d = -d;
  }
  const negative = n < 0n;
  const abs = negative ? -n : n;
  let q = abs / d;
  const r = abs % d;
  if (r !== 0n && r * 2n >= d) q += 1n;
  return negative ? -q : q;
}

const clamp = (v, lo, hi) => (v < lo ? lo : v > hi ? hi : v);

/** basisPoints of amountMinor, rounded half up. */
const percentOf = (amountMinor, basisPoints) =>
  divRoundHalfUp(amountMinor * BigInt(basisPoints), BASIS_POINTS);

/** 1000 → "10%", 1250 → "12.5%", 505 → "5.05%". */
function formatPercent(basisPoints) {
  const bp = BigInt(basisPoints);
  const sign = bp < 0n ? '-' : '';
  const abs = bp < 0n ? -bp : bp;
  const whole = abs / 100n;
  const frac = abs % 100n;
  if (frac === 0n) return `${sign}${whole}%`;
  if (frac % 10n === 0n) return `${sign}${whole}.${frac / 10n}%`;
  return `${sign}${whole}.${String(frac).padStart(2, '0')}%`;
}

function currencyExponent(currency) {
  switch (currency) {
    case 'BIF': case 'CLP': case 'DJF': case 'GNF': case 'ISK': case 'JPY': case 'KMF':
    case 'KRW': case 'PYG': case 'RWF': case 'UGX': case 'UYI': case 'VND': case 'VUV':
    case 'XAF': case 'XOF': case 'XPF':
      return 0;
    case 'BHD': case 'IQD': case 'JOD': case 'KWD': case 'LYD': case 'OMR': case 'TND':
      return 3;
    case 'CLF': case 'UYW':
      return 4;
    default:
      return 2;
  }
}

/** {9700n, "USD"} → "97.00 USD". */
function formatMoney({ amountMinor, currency }) {
  const exp = currencyExponent(currency);
  const sign = amountMinor < 0n ? '-' : '';
  const abs = amountMinor < 0n ? -amountMinor : amountMinor;
  if (exp === 0) return `${sign}${abs} ${currency}`;
  const scale = 10n ** BigInt(exp);
  return `${sign}${abs / scale}.${String(abs % scale).padStart(exp, '0')} ${currency}`;
}

// --- configuration (mirrors Settings::from_lookup) ---------------------------------------

/** An optional whole number 0..=u32::MAX, like Rust's `str::parse::<u32>` after trim. */
function parseU32(key, value, fallback) {
  if (value === undefined) return fallback;
  const text = value.trim();
  if (!/^\+?[0-9]+$/.test(text) || BigInt(text) > U32_MAX) {
    throw `config \`${key}\` = ${JSON.stringify(value)} is not a valid whole number (0 or more)`;
  }
  return Number(BigInt(text));
}

function loadSettings(lookup) {
  const tiers = [];
  for (let n = 1; n <= MAX_TIERS; n++) {
    const defaults = n === 1 ? [10, 1000] : n === 2 ? [50, 2000] : [undefined, 0];
    const quantityKey = `tier_${n}_quantity`;
    const bpKey = `tier_${n}_discount_bp`;
    const minQuantity = parseU32(quantityKey, lookup(quantityKey), defaults[0]);
    if (minQuantity === undefined) break;
    const discountBp = parseU32(bpKey, lookup(bpKey), defaults[1]);
    if (minQuantity === 0) throw `config \`${quantityKey}\` must be at least 1`;
    if (discountBp > 10000) throw `config \`${bpKey}\` must be at most 10000 (100%)`;
    tiers.push({ minQuantity, discountBp });
  }
  tiers.sort((a, b) => a.minQuantity - b.minQuantity);
  const loyaltyDiscountBp = parseU32('loyalty_discount_bp', lookup('loyalty_discount_bp'), 500);
  if (loyaltyDiscountBp > 10000) throw 'config `loyalty_discount_bp` must be at most 10000 (100%)';
  return {
    tiers,
    loyaltySegment: lookup('loyalty_segment') ?? 'high_value',
    loyaltyDiscountBp,
  };
}

// --- decisions (mirror quote() and recommend() of the Rust twin) -------------------------

function quote(request, settings) {
  if (request.quantity === 0) throw 'quantity must be at least 1';
  const unit = request.unitPrice;
  if (unit.amountMinor < 0n) throw 'unit price must not be negative';
  const listTotal = unit.amountMinor * BigInt(request.quantity);
  if (listTotal > I64_MAX) throw 'list total does not fit in 64 bits';

  const tier = [...settings.tiers].reverse().find((t) => request.quantity >= t.minQuantity);
  const loyal =
    settings.loyaltyDiscountBp > 0 && request.customer.segments.includes(settings.loyaltySegment);

  const parts = [];
  let discountBp = 0;
  if (tier && tier.discountBp > 0) {
    discountBp += tier.discountBp;
    parts.push(`${formatPercent(tier.discountBp)} volume discount for ${tier.minQuantity}+ units`);
  }
  if (loyal) {
    discountBp += settings.loyaltyDiscountBp;
    parts.push(
      `${formatPercent(settings.loyaltyDiscountBp)} loyalty discount for ${settings.loyaltySegment} customers`,
    );
  }
  discountBp = Math.min(discountBp, 10000);
  const discount = percentOf(listTotal, discountBp);
  return {
    amount: { amountMinor: listTotal - discount, currency: unit.currency },
    discount: { amountMinor: discount, currency: unit.currency },
    reason: parts.length === 0 ? 'list price' : parts.join('; '),
  };
}

const offered = (p) => BigInt(p.customers) + BigInt(p.failed);

/** Whether a earns strictly more per offered customer than b. */
const earnsMore = (a, b) => a.revenue.amountMinor * offered(b) > b.revenue.amountMinor * offered(a);

/** Change from base to new ratio in basis points, rounded half up; 0 for a zero base. */
function ratioChangeBp(newNum, newDen, baseNum, baseDen) {
  const bp = divRoundHalfUp((newNum * baseDen - baseNum * newDen) * BASIS_POINTS, baseNum * newDen);
  return bp === null ? 0 : Number(clamp(bp, I32_MIN, I32_MAX));
}

function recommend(request) {
  const current = request.currentPrice;
  if (current.amountMinor <= 0n) throw 'current price must be positive';
  const usable = request.history.filter(
    (p) =>
      p.unitPrice.currency === current.currency && p.unitPrice.amountMinor > 0n && offered(p) > 0n,
  );

  if (usable.length === 0) {
    // Nothing to learn from: an invented change would be a guess presented as a finding.
    return {
      recommendedPrice: { amountMinor: current.amountMinor, currency: current.currency },
      revenueChangeBasisPoints: 0,
      conversionChangeBasisPoints: 0,
      reason: 'no usable evidence: the current price is kept',
    };
  }

  const best = usable.reduce((b, p) => (earnsMore(p, b) ? p : b));
  // Compare against the point at the current price, or else the newest point.
  const base = usable.find((p) => p.unitPrice.amountMinor === current.amountMinor) ?? usable[0];
  const revenueChange = ratioChangeBp(
    best.revenue.amountMinor, offered(best), base.revenue.amountMinor, offered(base));
  const conversionChange = ratioChangeBp(
    BigInt(best.customers), offered(best), BigInt(base.customers), offered(base));
  const perOffered = divRoundHalfUp(best.revenue.amountMinor, offered(best)) ?? 0n;
  return {
    recommendedPrice: { amountMinor: best.unitPrice.amountMinor, currency: best.unitPrice.currency },
    revenueChangeBasisPoints: revenueChange,
    conversionChangeBasisPoints: conversionChange,
    reason:
      `highest revenue per offered customer: ${formatMoney({ amountMinor: perOffered, currency: current.currency })}` +
      ` at ${formatMoney(best.unitPrice)} (${best.customers} of ${offered(best)} offered customers paid)`,
  };
}

// --- the exported interface `hephaestus:plugins/pricer@0.1.0` -----------------------------

export const pricer = {
  quote(request) {
    return quote(request, loadSettings(configGet));
  },
  recommend(request) {
    // A broken config fails every call, as it does for quotes.
    loadSettings(configGet);
    return recommend(request);
  },
};
