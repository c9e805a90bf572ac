/** The local market section: whether `golem devnet` runs, and a button that starts or stops it. */

import { GolemApi, IDevnet } from './api';
import { h } from './dom';
import { formatWei } from './formatting';

/** How many provider agents a local market started from the panel gets. */
export const DEVNET_PROVIDERS = 2;

export class DevnetSection {
  readonly node: HTMLElement;
  /** Called with the error text when starting or stopping fails, null when it succeeds. */
  onError: (message: string | null) => void = () => undefined;
  /** Called after the market was started or stopped (the panel refreshes everything). */
  onChanged: (devnet: IDevnet) => void = () => undefined;

  private _button: HTMLButtonElement;
  private _state: HTMLElement;
  private _devnet: IDevnet | null = null;
  private _busy = false;

  constructor(private _api: GolemApi) {
    this._button = h('button', {
      className: 'jp-GolemPanel-button',
      data: { golem: 'devnet-toggle', running: 'false' },
      attrs: { type: 'button' }
    });
    this._button.addEventListener('click', () => void this.toggle());
    this._state = h('div', { className: 'jp-GolemPanel-note', data: { golem: 'devnet-state' } });
    this.node = h(
      'section',
      { className: 'jp-GolemPanel-section', data: { 'golem-section': 'devnet' } },
      h(
        'div',
        { className: 'jp-GolemPanel-sectionHeader' },
        h('h3', { className: 'jp-GolemPanel-sectionTitle' }, 'Local market'),
        this._button
      ),
      this._state
    );
    this.render();
  }

  get busy(): boolean {
    return this._busy;
  }

  /** What the server said about the devnet (ignored while a start or stop is under way). */
  update(devnet: IDevnet | null): void {
    if (this._busy) {
      return;
    }
    this._devnet = devnet;
    this.render();
  }

  /** Start the local market when it is not running, stop it when it is. */
  async toggle(): Promise<void> {
    if (this._busy) {
      return;
    }
    const action = this._devnet?.running ? 'stop' : 'start';
    this._busy = true;
    this.render(action === 'start' ? 'starting…' : 'stopping…');
    try {
      const devnet = await this._api.setDevnet(action, DEVNET_PROVIDERS);
      this._devnet = devnet;
      this.onError(null);
      this._busy = false;
      this.render();
      this.onChanged(devnet);
    } catch (error) {
      this._busy = false;
      const text = (error as Error).message || String(error);
      this.onError(`Could not ${action} the local market: ${text}`);
      this.render();
      // The market may have changed anyway (a 409 says it already was): ask again.
      this._api.devnet().then(
        devnet => this.update(devnet),
        () => undefined
      );
    }
  }

  render(busyText?: string): void {
    const devnet = this._devnet;
    const running = !!devnet?.running;
    this._button.dataset.running = running ? 'true' : 'false';
    this._button.disabled = this._busy;
    if (busyText) {
      this._button.textContent = busyText;
      this._button.setAttribute('aria-busy', 'true');
    } else {
      this._button.textContent = running ? 'Stop' : 'Start';
      this._button.removeAttribute('aria-busy');
    }
    this._button.title = running
      ? 'Stop the local market (chain and provider agents)'
      : `Start a local market: an embedded chain and ${DEVNET_PROVIDERS} provider agents (takes up to a minute)`;
    if (this._busy) {
      this._state.textContent = busyText?.startsWith('start')
        ? 'Starting the chain and the provider agents; this can take up to a minute…'
        : 'Stopping the local market…';
    } else if (running && devnet) {
      const providers = devnet.providers ?? [];
      const gpus = providers.reduce((sum, p) => sum + (p.gpus || 0), 0);
      const prices = providers.map(p => formatWei(p.price_per_cpu_second_wei));
      this._state.textContent =
        `Running: chain ${devnet.chain_id ?? '?'} at ${devnet.rpc_url ?? '?'}, ` +
        `${providers.length} provider${providers.length === 1 ? '' : 's'}` +
        (gpus ? ` (${gpus} GPU${gpus === 1 ? '' : 's'})` : '') +
        (devnet.started_here ? '' : '; started outside this server') +
        '.';
      this._state.title = prices.length ? `CPU prices per second: ${prices.join(', ')}` : '';
    } else {
      this._state.textContent = devnet ? 'Not running.' : '';
      this._state.title = '';
    }
  }
}
