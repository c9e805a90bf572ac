/** The wallet section: network, wallet address, balance, amount locked in escrow. */

import { IStatus } from './api';
import { h, replaceChildren } from './dom';
import { amount } from './amount';

export class WalletSection {
  readonly node: HTMLElement;
  private _network: HTMLElement;
  private _address: HTMLElement;
  private _balance: HTMLElement;
  private _locked: HTMLElement;
  private _note: HTMLElement;

  constructor() {
    this._network = h('span', { className: 'jp-GolemPanel-value', data: { golem: 'network' } }, '—');
    this._address = h('span', { className: 'jp-GolemPanel-value jp-GolemPanel-mono', data: { golem: 'wallet-address' } }, '—');
    this._balance = h('span', { className: 'jp-GolemPanel-value', data: { golem: 'balance' } }, '—');
    this._locked = h('span', { className: 'jp-GolemPanel-value', data: { golem: 'locked' } }, '—');
    this._note = h('div', { className: 'jp-GolemPanel-note' });
    this.node = h(
      'section',
      { className: 'jp-GolemPanel-section', data: { 'golem-section': 'wallet' } },
      h('h3', { className: 'jp-GolemPanel-sectionTitle' }, 'Wallet'),
      h(
        'dl',
        { className: 'jp-GolemPanel-fields' },
        h('dt', {}, 'Network'),
        h('dd', {}, this._network),
        h('dt', {}, 'Address'),
        h('dd', {}, this._address),
        h('dt', {}, 'Balance'),
        h('dd', {}, this._balance),
        h('dt', {}, 'In escrow'),
        h('dd', {}, this._locked)
      ),
      this._note
    );
  }

  /** Show `status`; null when the server did not answer (the panel shows why). */
  update(status: IStatus | null): void {
    const network = status?.network ?? null;
    if (network) {
      this._network.textContent = `${network.name} (chain ${network.chain_id})`;
      this._network.title = [network.rpc_url, `escrow ${network.escrow}`, `registry ${network.registry}`].join('\n');
    } else {
      this._network.textContent = status ? 'none' : '—';
      this._network.title = '';
    }
    const wallet = status?.wallet ?? null;
    this._address.textContent = wallet?.address ?? '—';
    this._address.title = wallet?.address ?? '';
    replaceChildren(this._balance, wallet ? amount(wallet.balance_wei) : '—');

    const escrow = status?.escrow ?? null;
    if (escrow && status?.reachable !== false) {
      const sessions = escrow.open_sessions;
      replaceChildren(
        this._locked,
        amount(escrow.locked_wei),
        h('span', { className: 'jp-GolemPanel-muted' }, ` in ${sessions} open session${sessions === 1 ? '' : 's'}`)
      );
    } else {
      replaceChildren(this._locked, '—');
    }

    const credited = wallet?.credited_wei;
    if (credited && credited !== '0') {
      replaceChildren(this._note, amount(credited), ' credited to you in escrow, ready to withdraw (golem wallet withdraw).');
    } else if (status && !status.reachable && !status.error) {
      this._note.textContent = network ? 'The chain is not reachable.' : 'No network: start a local market below, or set one in the settings.';
    } else {
      this._note.textContent = '';
    }
  }
}
