/**
 * The Golem side panel: wallet, local market, market offers and jobs, kept up
 * to date by polling the server extension while the panel is visible.
 */

import { refreshIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { FINAL_STATUSES, GolemApi, IReceipt } from './api';
import { DevnetSection } from './devnet';
import { h, replaceChildren } from './dom';
import { golemIcon } from './icon';
import { JobsSection } from './jobs';
import { OffersSection } from './offers';
import { SessionsSection } from './sessions';
import { WalletSection } from './wallet';

export const DEFAULT_POLL_INTERVAL = 3000;
export const MIN_POLL_INTERVAL = 500;
/** How many jobs the list shows (the newest). */
export const JOB_LIMIT = 50;

export interface IPanelSettings {
  /** Milliseconds between two refreshes while the panel is visible. */
  pollInterval: number;
  /** The network asked for (`?network=`); '' is the server's default. */
  network: string;
}

/** The panel's error line(s), one per source, in the element `data-golem="error"`. */
class ErrorBanner {
  readonly node = h('div', { className: 'jp-GolemPanel-error', data: { golem: 'error' }, attrs: { role: 'alert' } });
  private _messages = new Map<string, string>();

  set(source: string, message: string | null): void {
    if (message) {
      this._messages.set(source, message);
    } else {
      this._messages.delete(source);
    }
    this._render();
  }

  get(source: string): string | null {
    return this._messages.get(source) ?? null;
  }

  private _render(): void {
    const lines = Array.from(this._messages.entries()).map(([source, message]) =>
      h('div', { className: 'jp-GolemPanel-errorLine', data: { 'golem-error-source': source } }, message)
    );
    replaceChildren(this.node, lines);
    this.node.hidden = lines.length === 0;
  }
}

function messageOf(error: unknown): string {
  return (error as Error)?.message || String(error);
}

export class GolemPanel extends Widget {
  /** Called by the "Insert connect cell" button. */
  onInsertConnect: () => void = () => undefined;

  private _api: GolemApi;
  private _errors = new ErrorBanner();
  private _wallet = new WalletSection();
  private _devnet: DevnetSection;
  private _offers = new OffersSection();
  private _jobs = new JobsSection();
  private _sessions: SessionsSection;
  private _insert: HTMLButtonElement;
  private _interval = DEFAULT_POLL_INTERVAL;
  private _polling = false;
  private _timer: number | null = null;
  private _inflight: Promise<void> | null = null;
  private _again = false;
  private _receipt: IReceipt | null = null;

  constructor(api: GolemApi = new GolemApi()) {
    super();
    this._api = api;
    this.id = 'golem-jupyter-panel';
    this.addClass('jp-GolemPanel');
    this.node.dataset.golem = 'panel';
    this.title.icon = golemIcon;
    this.title.caption = 'Golem';

    this._devnet = new DevnetSection(api);
    this._devnet.onError = message => this._errors.set('devnet', message);
    this._devnet.onChanged = () => void this.refresh();
    this._sessions = new SessionsSection(api);
    this._sessions.onChanged = () => void this.refresh();
    this._jobs.onSelect = graphId => {
      this._receipt = null;
      if (graphId !== null) {
        void this._loadReceipt(graphId);
      }
    };

    this._insert = h(
      'button',
      {
        className: 'jp-GolemPanel-button',
        title: 'Insert `%load_ext golem_jupyter` and `%golem connect` at the top of the active notebook',
        data: { golem: 'insert-connect' },
        attrs: { type: 'button' }
      },
      'Insert connect cell'
    );
    this._insert.addEventListener('click', () => this.onInsertConnect());

    const refresh = h('button', {
      className: 'jp-GolemPanel-iconButton',
      title: 'Refresh now',
      data: { golem: 'refresh' },
      attrs: { type: 'button', 'aria-label': 'Refresh' }
    });
    refreshIcon.element({ container: refresh, tag: 'span', elementSize: 'normal' });
    refresh.addEventListener('click', () => void this.refresh());

    const logo = h('span', { className: 'jp-GolemPanel-logo' });
    golemIcon.element({ container: logo, tag: 'span', elementSize: 'normal' });

    this.node.appendChild(
      h(
        'div',
        { className: 'jp-GolemPanel-content' },
        h('header', { className: 'jp-GolemPanel-header' }, logo, h('h2', { className: 'jp-GolemPanel-title' }, 'Golem'), refresh),
        h('div', { className: 'jp-GolemPanel-actions' }, this._insert),
        this._errors.node,
        this._wallet.node,
        this._devnet.node,
        this._offers.node,
        this._jobs.node,
        this._sessions.node
      )
    );
    this._errors.set('init', null);
  }

  get pollInterval(): number {
    return this._interval;
  }

  get network(): string {
    return this._api.network;
  }

  /** Whether the panel is polling now (it is while visible). */
  get isPolling(): boolean {
    return this._polling;
  }

  /** Apply settings; a new network refreshes at once, a new interval from the next poll. */
  configure(settings: Partial<IPanelSettings>): void {
    if (settings.pollInterval !== undefined) {
      const interval = Number(settings.pollInterval);
      this._interval = Number.isFinite(interval) ? Math.max(MIN_POLL_INTERVAL, interval) : DEFAULT_POLL_INTERVAL;
    }
    if (settings.network !== undefined && settings.network !== this._api.network) {
      this._api.network = settings.network;
      this._receipt = null;
      if (this._polling) {
        this._schedule(0);
      }
    } else if (this._polling) {
      this._schedule(this._interval);
    }
  }

  /** Whether the "Insert connect cell" button can be used (a notebook is open). */
  setCanInsert(enabled: boolean): void {
    this._insert.disabled = !enabled;
    this._insert.title = enabled
      ? 'Insert `%load_ext golem_jupyter` and `%golem connect` at the top of the active notebook'
      : 'Open a notebook first';
  }

  /** Ask the server for everything the panel shows (one request of each kind at a time). */
  refresh(): Promise<void> {
    if (this._inflight) {
      this._again = true;
      return this._inflight;
    }
    this._inflight = this._refresh()
      .catch(error => {
        console.error('golem-jupyter: refreshing the panel failed', error);
        this._errors.set('panel', `The panel could not be updated: ${messageOf(error)}`);
      })
      .finally(() => {
        this._inflight = null;
        if (this._again && !this.isDisposed) {
          this._again = false;
          void this.refresh();
        }
      });
    return this._inflight;
  }

  dispose(): void {
    this._stopPolling();
    super.dispose();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this._startPolling();
    }
  }

  protected onBeforeDetach(msg: Message): void {
    this._stopPolling();
    super.onBeforeDetach(msg);
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._startPolling();
  }

  protected onAfterHide(msg: Message): void {
    this._stopPolling();
    super.onAfterHide(msg);
  }

  private _startPolling(): void {
    if (this._polling) {
      return;
    }
    this._polling = true;
    this._schedule(0);
  }

  private _stopPolling(): void {
    this._polling = false;
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _schedule(delay: number): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    this._timer = window.setTimeout(() => void this._tick(), delay);
  }

  private async _tick(): Promise<void> {
    this._timer = null;
    if (!this._polling || this.isDisposed) {
      return;
    }
    await this.refresh();
    if (this._polling && this._timer === null && !this.isDisposed) {
      this._schedule(this._interval);
    }
  }

  private async _refresh(): Promise<void> {
    const api = this._api;
    const network = api.network;
    const [status, providers, jobs, sessions] = await Promise.allSettled([
      api.status(),
      api.providers(),
      api.jobs(JOB_LIMIT),
      api.sessions()
    ]);
    if (network !== api.network || this.isDisposed) {
      return; // the network changed meanwhile: these answers are about the old one
    }
    this._errors.set('panel', null);

    let serverError: string | null = null;
    if (status.status === 'rejected') {
      serverError = messageOf(status.reason);
      this._errors.set('server', serverError);
      this._errors.set('chain', null);
      this._wallet.update(null);
      this._devnet.update(null);
    } else {
      const value = status.value;
      this._errors.set('server', null);
      this._errors.set('chain', value.reachable ? null : value.error || 'The chain is not reachable.');
      this._wallet.update(value);
      this._devnet.update(value.devnet ?? null);
    }

    const noNetwork = status.status === 'fulfilled' && !status.value.network;
    if (providers.status === 'fulfilled') {
      this._offers.update(providers.value.offers ?? []);
    } else if (noNetwork) {
      this._offers.update(null, 'No market to show: there is no network.');
    } else {
      const text = messageOf(providers.reason);
      this._offers.update(null, text === serverError ? 'Unavailable.' : text);
    }

    if (jobs.status === 'fulfilled') {
      this._jobs.update(jobs.value.jobs ?? [], jobs.value.total ?? null);
    } else {
      const text = messageOf(jobs.reason);
      this._jobs.update(null, null, text === serverError ? 'Unavailable.' : text);
    }

    if (sessions.status === 'fulfilled') {
      this._sessions.update(sessions.value.sessions ?? []);
    } else if (noNetwork) {
      this._sessions.update(null, 'No sessions to show: there is no network.');
    } else {
      const text = messageOf(sessions.reason);
      this._sessions.update(null, text === serverError ? 'Unavailable.' : text);
    }

    const selected = this._jobs.selected;
    if (selected !== null) {
      const receipt = this._receipt;
      const listed = this._jobs.statusOf(selected);
      if (!receipt || !FINAL_STATUSES.has(receipt.status) || (listed !== null && listed !== receipt.status)) {
        await this._loadReceipt(selected);
      }
    }
  }

  private async _loadReceipt(graphId: string): Promise<void> {
    try {
      const receipt = await this._api.job(graphId);
      if (this._jobs.selected === graphId) {
        this._receipt = receipt;
        this._jobs.showReceipt(receipt);
      }
    } catch (error) {
      this._jobs.showReceiptError(graphId, messageOf(error));
    }
  }
}
