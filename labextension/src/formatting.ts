/**
 * Amounts, addresses and times for humans.
 *
 * Amounts arrive from the server as decimal strings of wei; they are parsed
 * with BigInt and never pass through a float, like golem_jupyter.amounts.format_wei
 * (the CLI's bills and the panel write them the same way).
 */

const GWEI = 10n ** 9n;
const ETH = 10n ** 18n;

/** A decimal string (or bigint/number) of wei as a BigInt, or null when it is not one. */
export function parseWei(value: string | number | bigint | null | undefined): bigint | null {
  if (typeof value === 'bigint') {
    return value;
  }
  if (typeof value === 'number') {
    return Number.isSafeInteger(value) ? BigInt(value) : null;
  }
  if (typeof value !== 'string' || !/^\s*-?\d+\s*$/.test(value)) {
    return null;
  }
  return BigInt(value.trim());
}

/**
 * `amount` wei for humans, the convention of golem_jupyter.amounts.format_wei:
 * rounded half up to 4 significant digits, then in wei below 10 000 wei
 * (exact), in gwei below 10^14 wei, in ETH from 0.0001 ETH up; trailing zeros
 * dropped ("0.0000258 gwei", "1.235 gwei", "0.01 ETH", "12.35 ETH"). The exact
 * amount is `exactWei`, one click away wherever the panel shows an amount
 * (see amount.ts). Anything that is not an integer is shown as given.
 */
export function formatWei(value: string | number | bigint | null | undefined): string {
  if (value === null || value === undefined || value === '') {
    return '—';
  }
  const amount = parseWei(value);
  if (amount === null) {
    return String(value);
  }
  return formatBigWei(amount);
}

/** The exact amount: "12345678901234567890 wei" (or '—'). */
export function exactWei(value: string | number | bigint | null | undefined): string {
  const amount = parseWei(value ?? null);
  return amount === null ? (value === null || value === undefined || value === '' ? '—' : String(value)) : `${amount} wei`;
}

const SIGNIFICANT = 4;
const WEI_BELOW = 10n ** 4n;
const GWEI_BELOW = 10n ** 14n;

function formatBigWei(amount: bigint): string {
  if (amount < 0n) {
    return '-' + formatBigWei(-amount);
  }
  const digits = amount.toString().length;
  let rounded = amount;
  if (digits > SIGNIFICANT) {
    const step = 10n ** BigInt(digits - SIGNIFICANT);
    rounded = ((amount + step / 2n) / step) * step;
  }
  if (rounded < WEI_BELOW) {
    return `${rounded} wei`;
  }
  if (rounded < GWEI_BELOW) {
    return `${decimal(rounded, GWEI)} gwei`;
  }
  return `${decimal(rounded, ETH)} ETH`;
}

/** `amount / unit` written out exactly, without trailing zeros. */
function decimal(amount: bigint, unit: bigint): string {
  const whole = amount / unit;
  const fraction = amount % unit;
  if (fraction === 0n) {
    return whole.toString();
  }
  const width = unit.toString().length - 1;
  const digits = fraction.toString().padStart(width, '0').replace(/0+$/, '');
  return `${whole}.${digits}`;
}

/** Compare two wei strings exactly (unparseable ones sort first). */
export function compareWei(a: string | null | undefined, b: string | null | undefined): number {
  const x = parseWei(a);
  const y = parseWei(b);
  if (x === null || y === null) {
    return (x === null ? 0 : 1) - (y === null ? 0 : 1);
  }
  return x < y ? -1 : x > y ? 1 : 0;
}

/** "0x1234…abcd" for an address or hash; anything short is returned whole. */
export function shortAddress(address: string | null | undefined, keep = 4): string {
  if (!address) {
    return '—';
  }
  const body = address.startsWith('0x') ? 2 : 0;
  if (address.length <= body + 2 * keep + 1) {
    return address;
  }
  return `${address.slice(0, body + keep)}…${address.slice(-keep)}`;
}

/** Seconds of compute, e.g. "0.613 s". */
export function formatSeconds(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return '—';
  }
  return `${seconds.toFixed(3)} s`;
}

/** A unix timestamp (seconds) as local date and time. */
export function formatTimestamp(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return '—';
  }
  return new Date(seconds * 1000).toLocaleString();
}

/** A unix timestamp (seconds) relative to now: "just now", "5 min ago", or the date. */
export function formatAge(seconds: number | null | undefined, now: number = Date.now() / 1000): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return '';
  }
  const age = Math.max(0, now - seconds);
  if (age < 10) {
    return 'just now';
  }
  if (age < 60) {
    return `${Math.floor(age)} s ago`;
  }
  if (age < 3600) {
    return `${Math.floor(age / 60)} min ago`;
  }
  if (age < 86400) {
    return `${Math.floor(age / 3600)} h ago`;
  }
  return new Date(seconds * 1000).toLocaleDateString();
}

/** The file name of a notebook path ("dir/quickstart.ipynb" → "quickstart.ipynb"). */
export function notebookName(path: string | null | undefined): string {
  if (!path) {
    return '';
  }
  const parts = path.split(/[\\/]/);
  return parts[parts.length - 1] || path;
}
