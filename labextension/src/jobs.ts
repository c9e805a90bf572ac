/** The jobs section: graph executions, newest first, each opening its receipt when clicked. */

import { IJob, IReceipt } from './api';
import { h, replaceChildren } from './dom';
import { exactWei, formatAge, formatTimestamp, formatWei, notebookName } from './formatting';
import { renderReceipt, statusBadge } from './receipt';

/** Newest first (by creation time; ties keep the server's order). */
export function newestFirst(jobs: IJob[]): IJob[] {
  return jobs
    .map((job, index) => ({ job, index }))
    .sort((a, b) => (b.job.created_at ?? 0) - (a.job.created_at ?? 0) || a.index - b.index)
    .map(item => item.job);
}

/**
 * How far a job's settlement has come. A job reaches the ledger when its graph has run; then its
 * settlement goes pending (the voucher is signed) → submitted (settleGraph sent) → confirmed (mined).
 */
export const SETTLEMENT_STEPS = ['pending', 'submitted', 'confirmed'];

export function settlementStep(status: string): number {
  const step = SETTLEMENT_STEPS.indexOf(status);
  return step < 0 ? 0 : step + 1;
}

/** A thin bar under the job: one third per settlement step; a failed or abandoned job shows its colour. */
export function progressBar(status: string): HTMLElement {
  const step = settlementStep(status);
  const bar = h('span', { className: 'jp-GolemPanel-progressDone' });
  bar.style.width = `${(100 * step) / SETTLEMENT_STEPS.length}%`;
  return h(
    'div',
    {
      className: `jp-GolemPanel-progress jp-GolemPanel-progress-${step ? 'step' : status}`,
      title: step ? `Settlement: ${SETTLEMENT_STEPS.slice(0, step).join(' → ')}` : `Settlement ${status}`,
      data: { golem: 'job-progress', step },
      attrs: {
        role: 'progressbar',
        'aria-valuemin': 0,
        'aria-valuemax': SETTLEMENT_STEPS.length,
        'aria-valuenow': step,
        'aria-label': 'Settlement progress'
      }
    },
    bar
  );
}

export class JobsSection {
  readonly node: HTMLElement;
  /** Called with the graph id clicked, or null when the open receipt is closed. */
  onSelect: (graphId: string | null) => void = () => undefined;

  private _list: HTMLElement;
  private _count: HTMLElement;
  private _message: HTMLElement;
  private _receipt: HTMLElement;
  private _jobs: IJob[] = [];
  private _selected: string | null = null;

  constructor() {
    this._count = h('span', { className: 'jp-GolemPanel-muted' });
    this._list = h('div', { className: 'jp-GolemPanel-jobs', data: { golem: 'jobs' }, attrs: { role: 'list' } });
    this._message = h('div', { className: 'jp-GolemPanel-note' });
    this._receipt = h('div', { className: 'jp-GolemPanel-receipt', data: { golem: 'receipt' } });
    this.node = h(
      'section',
      { className: 'jp-GolemPanel-section', data: { 'golem-section': 'jobs' } },
      h('h3', { className: 'jp-GolemPanel-sectionTitle' }, 'Jobs ', this._count),
      this._list,
      this._message
    );
  }

  get selected(): string | null {
    return this._selected;
  }

  /** The status of `graphId` in the last list shown, if it is there. */
  statusOf(graphId: string): string | null {
    return this._jobs.find(job => job.graph_id === graphId)?.status ?? null;
  }

  update(jobs: IJob[] | null, total: number | null, message: string | null = null): void {
    this._jobs = jobs ? newestFirst(jobs) : [];
    this._message.textContent = message ?? (jobs && !jobs.length ? 'No jobs yet: run a %%golem cell.' : '');
    this._count.textContent = total ? (total > this._jobs.length ? `(${this._jobs.length} of ${total})` : `(${total})`) : '';
    this.render();
  }

  select(graphId: string | null): void {
    this._selected = graphId;
    if (graphId === null) {
      replaceChildren(this._receipt);
    } else {
      replaceChildren(this._receipt, h('div', { className: 'jp-GolemPanel-note' }, 'Loading the receipt…'));
    }
    this.render();
  }

  showReceipt(receipt: IReceipt): void {
    if (receipt.graph_id !== this._selected) {
      return;
    }
    this._receipt.dataset.status = receipt.status;
    replaceChildren(this._receipt, this._receiptHeader(), renderReceipt(receipt));
  }

  showReceiptError(graphId: string, message: string): void {
    if (graphId !== this._selected) {
      return;
    }
    replaceChildren(this._receipt, this._receiptHeader(), h('div', { className: 'jp-GolemPanel-errorText' }, message));
  }

  render(): void {
    const rows: HTMLElement[] = [];
    for (const job of this._jobs) {
      const selected = job.graph_id === this._selected;
      const row = h(
        'div',
        {
          className: 'jp-GolemPanel-job' + (selected ? ' jp-mod-selected' : ''),
          title: `Graph ${job.graph_id}\n${formatTimestamp(job.created_at)}\nClick for the receipt`,
          data: { golem: 'job', 'graph-id': job.graph_id, status: job.status },
          attrs: { role: 'listitem', tabindex: 0, 'aria-expanded': selected ? 'true' : 'false' }
        },
        h(
          'div',
          { className: 'jp-GolemPanel-jobLine' },
          h('span', { className: 'jp-GolemPanel-jobLabel' }, job.label || 'graph'),
          h('span', { className: 'jp-GolemPanel-jobNotebook', title: job.notebook ?? '' }, notebookName(job.notebook)),
          statusBadge(job.status)
        ),
        h(
          'div',
          { className: 'jp-GolemPanel-jobMeta jp-GolemPanel-muted' },
          `${job.n_tasks} task${job.n_tasks === 1 ? '' : 's'} · `,
          h('span', { title: `${exactWei(job.amount_wei)}; the receipt shows it exactly` }, formatWei(job.amount_wei)),
          ` · ${formatAge(job.created_at)}`
        ),
        progressBar(job.status)
      );
      const toggle = () => {
        const next = this._selected === job.graph_id ? null : job.graph_id;
        this.select(next);
        this.onSelect(next);
      };
      row.addEventListener('click', toggle);
      row.addEventListener('keydown', event => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          toggle();
        }
      });
      rows.push(row);
      if (selected) {
        rows.push(this._receipt);
      }
    }
    if (this._selected !== null && !this._jobs.some(job => job.graph_id === this._selected)) {
      // The selected job is not in this page of the list: keep its receipt on top.
      rows.unshift(this._receipt);
    }
    replaceChildren(this._list, rows);
  }

  private _receiptHeader(): HTMLElement {
    const close = h('button', { className: 'jp-GolemPanel-close', title: 'Close the receipt', attrs: { type: 'button', 'aria-label': 'Close' } }, '×');
    close.addEventListener('click', event => {
      event.stopPropagation();
      this.select(null);
      this.onSelect(null);
    });
    return h('div', { className: 'jp-GolemPanel-receiptHeader' }, h('h4', { className: 'jp-GolemPanel-subTitle' }, 'Receipt'), close);
  }
}
