/** The market section: a sortable table of the providers' offers, with a "GPU only" filter. */

import { IOffer } from './api';
import { h, replaceChildren } from './dom';
import { amount } from './amount';
import { compareWei, shortAddress } from './formatting';

export type SortKey = 'provider' | 'cpu' | 'gpu' | 'gpus' | 'reputation' | 'faults' | 'sandbox' | 'reachable';

/** Sandbox tiers, weakest first, as offers state them (golem_jupyter.market.matching.SANDBOX_TIERS). */
export const SANDBOX_TIERS: readonly string[] = ['none', 'bwrap'];

interface IColumn {
  key: SortKey;
  label: string;
  title: string;
  numeric: boolean;
  cell(offer: IOffer): HTMLTableCellElement;
  /** Compare two offers ascending; null values are kept last whatever the direction. */
  value(offer: IOffer): string | number | null;
  compare?(a: IOffer, b: IOffer): number;
}

const COLUMNS: IColumn[] = [
  {
    key: 'provider',
    label: 'Provider',
    title: "The provider's address",
    numeric: false,
    cell: offer =>
      h('td', { className: 'jp-GolemPanel-mono', title: offer.provider + (offer.endpoint ? `\n${offer.endpoint}` : '') }, shortAddress(offer.provider)),
    value: offer => offer.provider.toLowerCase()
  },
  {
    key: 'cpu',
    label: 'CPU',
    title: 'Price per CPU-second',
    numeric: true,
    cell: offer => h('td', { title: 'per CPU-second' }, amount(offer.price_per_cpu_second_wei)),
    value: offer => offer.price_per_cpu_second_wei,
    compare: (a, b) => compareWei(a.price_per_cpu_second_wei, b.price_per_cpu_second_wei)
  },
  {
    key: 'gpu',
    label: 'GPU',
    title: 'Price per GPU-second',
    numeric: true,
    cell: offer =>
      offer.gpus > 0
        ? h('td', { title: 'per GPU-second' }, amount(offer.price_per_gpu_second_wei))
        : h('td', { className: 'jp-GolemPanel-muted' }, '—'),
    value: offer => (offer.gpus > 0 ? offer.price_per_gpu_second_wei : null),
    compare: (a, b) => compareWei(a.price_per_gpu_second_wei, b.price_per_gpu_second_wei)
  },
  {
    key: 'gpus',
    label: 'GPUs',
    title: 'Number of GPUs (and their model)',
    numeric: true,
    cell: offer => h('td', { title: offer.gpu_model || '' }, String(offer.gpus)),
    value: offer => offer.gpus
  },
  {
    key: 'reputation',
    label: 'Rep.',
    title: 'Reputation computed from escrow events; "new" when the provider has no history',
    numeric: true,
    cell: offer =>
      offer.reputation === null || offer.reputation === undefined
        ? h('td', { className: 'jp-GolemPanel-muted' }, 'new')
        : h('td', {}, formatReputation(offer.reputation)),
    value: offer => (offer.reputation === null || offer.reputation === undefined ? null : offer.reputation)
  },
  {
    key: 'faults',
    label: 'Faults',
    title:
      'Wrong results the provider was reported for on-chain (FaultReported events); a provider with any is rented ' +
      'after every provider without one',
    numeric: true,
    cell: offer => {
      const faults = faultsOf(offer);
      return h('td', { className: faults > 0 ? 'jp-GolemPanel-no' : 'jp-GolemPanel-muted', data: { faults } }, String(faults));
    },
    value: offer => faultsOf(offer)
  },
  {
    key: 'sandbox',
    label: 'Sandbox',
    title: "What the provider runs your code in, as its offer states: 'bwrap' (a bubblewrap sandbox), 'none' (unconfined)",
    numeric: false,
    cell: offer => {
      const tier = sandboxOf(offer);
      const className = tier === 'none' ? 'jp-GolemPanel-no' : 'jp-GolemPanel-yes';
      return h('td', { className, data: { sandbox: tier } }, tier);
    },
    value: offer => SANDBOX_TIERS.indexOf(sandboxOf(offer))
  },
  {
    key: 'reachable',
    label: 'Up',
    title: "Whether the provider's agent answered",
    numeric: false,
    cell: offer =>
      h(
        'td',
        { className: offer.reachable ? 'jp-GolemPanel-yes' : 'jp-GolemPanel-no', data: { reachable: offer.reachable } },
        offer.reachable ? 'yes' : 'no'
      ),
    value: offer => (offer.reachable ? 1 : 0)
  }
];

/** The offer's sandbox tier; 'none' for a server that does not say or a tier this panel does not know. */
function sandboxOf(offer: IOffer): string {
  return SANDBOX_TIERS.includes(offer.sandbox) ? offer.sandbox : 'none';
}

/** The offer's reported faults; 0 for a server that does not say. */
function faultsOf(offer: IOffer): number {
  return typeof offer.faults === 'number' && offer.faults > 0 ? offer.faults : 0;
}

function formatReputation(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

/** Sort `offers` by `key` (a copy); null values go last in both directions, ties keep their order. */
export function sortOffers(offers: IOffer[], key: SortKey | null, ascending: boolean): IOffer[] {
  const column = COLUMNS.find(c => c.key === key);
  if (!column) {
    return offers.slice();
  }
  const sign = ascending ? 1 : -1;
  return offers
    .map((offer, index) => ({ offer, index }))
    .sort((x, y) => {
      const a = column.value(x.offer);
      const b = column.value(y.offer);
      if (a === null || b === null) {
        return a === b ? x.index - y.index : a === null ? 1 : -1;
      }
      let order: number;
      if (column.compare) {
        order = column.compare(x.offer, y.offer);
      } else if (typeof a === 'number' && typeof b === 'number') {
        order = a - b;
      } else {
        order = String(a).localeCompare(String(b));
      }
      return order * sign || x.index - y.index;
    })
    .map(item => item.offer);
}

export class OffersSection {
  readonly node: HTMLElement;
  private _table: HTMLTableElement;
  private _head: HTMLTableRowElement;
  private _body: HTMLTableSectionElement;
  private _gpuOnly: HTMLInputElement;
  private _count: HTMLElement;
  private _message: HTMLElement;
  private _offers: IOffer[] = [];
  private _sortKey: SortKey | null = null;
  private _ascending = true;

  constructor() {
    this._gpuOnly = h('input', { attrs: { type: 'checkbox' }, data: { golem: 'gpu-only' } });
    this._gpuOnly.addEventListener('change', () => this.render());
    this._count = h('span', { className: 'jp-GolemPanel-muted' });
    this._head = h('tr');
    this._body = h('tbody');
    this._table = h('table', { className: 'jp-GolemPanel-table', data: { golem: 'offers' } }, h('thead', {}, this._head), this._body);
    this._message = h('div', { className: 'jp-GolemPanel-note', data: { golem: 'offers-message' } });
    for (const column of COLUMNS) {
      const th = h(
        'th',
        {
          title: `${column.title}. Click to sort.`,
          className: column.numeric ? 'jp-GolemPanel-num' : '',
          data: { 'golem-sort': column.key },
          attrs: { scope: 'col', tabindex: 0, role: 'columnheader', 'aria-sort': 'none' }
        },
        column.label,
        h('span', { className: 'jp-GolemPanel-sortMark' })
      );
      th.addEventListener('click', () => this.sortBy(column.key));
      th.addEventListener('keydown', event => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          this.sortBy(column.key);
        }
      });
      this._head.appendChild(th);
    }
    this.node = h(
      'section',
      { className: 'jp-GolemPanel-section', data: { 'golem-section': 'market' } },
      h(
        'div',
        { className: 'jp-GolemPanel-sectionHeader' },
        h('h3', { className: 'jp-GolemPanel-sectionTitle' }, 'Market ', this._count),
        h('label', { className: 'jp-GolemPanel-check', title: 'Show only providers with GPUs' }, this._gpuOnly, 'GPU only')
      ),
      h('div', { className: 'jp-GolemPanel-tableWrap' }, this._table),
      this._message
    );
    this.render();
  }

  /** Sort by `key`: the same column again flips the direction, a new one starts ascending. */
  sortBy(key: SortKey): void {
    if (this._sortKey === key) {
      this._ascending = !this._ascending;
    } else {
      this._sortKey = key;
      this._ascending = true;
    }
    this.render();
  }

  /** Show these offers, or `message` (an error or "no market") instead. */
  update(offers: IOffer[] | null, message: string | null = null): void {
    this._offers = offers ?? [];
    this._message.textContent = message ?? '';
    this.render();
  }

  render(): void {
    for (const th of Array.from(this._head.children) as HTMLElement[]) {
      const key = th.dataset.golemSort;
      const active = key === this._sortKey;
      th.classList.toggle('jp-mod-sorted', active);
      th.setAttribute('aria-sort', active ? (this._ascending ? 'ascending' : 'descending') : 'none');
      th.lastElementChild!.textContent = active ? (this._ascending ? ' ▲' : ' ▼') : '';
    }
    const gpuOnly = this._gpuOnly.checked;
    const shown = sortOffers(
      this._offers.filter(offer => !gpuOnly || offer.gpus > 0),
      this._sortKey,
      this._ascending
    );
    const total = this._offers.length;
    this._count.textContent = total ? (shown.length === total ? `(${total})` : `(${shown.length} of ${total})`) : '';
    const rows = shown.map(offer =>
      h(
        'tr',
        { data: { golem: 'offer', provider: offer.provider, gpus: offer.gpus } },
        COLUMNS.map(column => {
          const cell = column.cell(offer);
          if (column.numeric) {
            cell.classList.add('jp-GolemPanel-num');
          }
          return cell;
        })
      )
    );
    if (!rows.length && !this._message.textContent) {
      const text = total ? 'No offer with GPUs.' : 'No offers on this market.';
      rows.push(h('tr', { className: 'jp-GolemPanel-empty' }, h('td', { attrs: { colspan: COLUMNS.length } }, text)));
    }
    replaceChildren(this._body, rows);
  }
}
