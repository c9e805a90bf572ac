/**
 * The sessions section: the wallet's escrow sessions that still hold money (deposited, paid,
 * allocated to providers, refundable now, when the rest can be closed), each with a Close button
 * that does what `golem sessions close` does: the providers' releases, then the cooperative close,
 * or a reclaim of everything no provider holds.
 */

import { Dialog, showDialog } from '@jupyterlab/apputils';

import { GolemApi, IEscrowSession } from './api';
import { amount } from './amount';
import { h, replaceChildren } from './dom';
import { formatAge, notebookName, shortAddress } from './formatting';

function field(name: string, help: string, value: HTMLElement): HTMLElement[] {
  return [h('dt', { title: help }, name), h('dd', {}, value)];
}

export class SessionsSection {
  readonly node: HTMLElement;
  /** Called after a Close, so the panel refreshes the wallet and the list. */
  onChanged: () => void = () => undefined;

  private _api: GolemApi;
  private _body: HTMLElement;
  private _message: HTMLElement;
  private _result: HTMLElement;
  private _busy = new Set<string>();

  constructor(api: GolemApi) {
    this._api = api;
    this._body = h('div', { className: 'jp-GolemPanel-sessions', data: { golem: 'sessions' }, attrs: { role: 'list' } });
    this._message = h('div', { className: 'jp-GolemPanel-note', data: { golem: 'sessions-message' } });
    this._result = h('div', { className: 'jp-GolemPanel-note', data: { golem: 'close-result' } });
    this.node = h(
      'section',
      { className: 'jp-GolemPanel-section', data: { 'golem-section': 'sessions' } },
      h('h3', { className: 'jp-GolemPanel-sectionTitle' }, 'Sessions'),
      this._body,
      this._message,
      this._result
    );
  }

  /** Show `sessions`; null with `error` when they could not be read. */
  update(sessions: IEscrowSession[] | null, error?: string): void {
    replaceChildren(this._body, (sessions ?? []).map(session => this._row(session)));
    this._message.textContent = sessions === null ? error ?? '' : sessions.length ? '' : 'No open sessions.';
  }

  private _row(session: IEscrowSession): HTMLElement {
    const busy = this._busy.has(session.session_id);
    const close = h(
      'button',
      {
        className: 'jp-GolemPanel-button',
        title: 'Ask its providers to release their allocations and close it; the rest of the deposit comes back now',
        data: { golem: 'close-session', session: session.session_id },
        attrs: { type: 'button', disabled: busy || session.closed }
      },
      busy ? 'Closing…' : 'Close'
    );
    close.addEventListener('click', () => void this._close(session));
    const name = session.label ? notebookName(session.label) : '';
    return h(
      'div',
      {
        className: 'jp-GolemPanel-session',
        data: { golem: 'session-row', session: session.session_id, status: session.status },
        attrs: { role: 'listitem' }
      },
      h(
        'div',
        { className: 'jp-GolemPanel-sessionHeader' },
        h('span', { className: 'jp-GolemPanel-mono', title: session.session_id }, shortAddress(session.session_id)),
        h('span', { className: 'jp-GolemPanel-muted' }, [name, formatAge(session.created_at)].filter(Boolean).join(' · ')),
        close
      ),
      h(
        'dl',
        { className: 'jp-GolemPanel-fields' },
        field('Deposited', 'Deposited in escrow, top-ups included', amount(session.deposited_wei, 'session-deposited')),
        field('Paid', 'Paid to providers', amount(session.paid_wei, 'session-paid')),
        field(
          'Allocated',
          'Held in providers’ open allocations and not paid yet: only they can draw on it, or release it',
          amount(session.allocated_wei, 'session-allocated')
        ),
        field('Refundable now', 'What closing returns at once', amount(session.refundable_now_wei, 'session-refundable')),
        field('Closable', 'When the rest can be closed', h('span', { data: { golem: 'session-closable' } }, session.closable))
      )
    );
  }

  private async _close(session: IEscrowSession): Promise<void> {
    const label = session.label ? ` (${notebookName(session.label)})` : '';
    const answer = await showDialog({
      title: 'Close this session?',
      body:
        `Session ${shortAddress(session.session_id)}${label}: its providers are asked to release their allocations, ` +
        'then the session is closed and the rest of the deposit comes back to your wallet. A kernel still using ' +
        'this session loses its providers.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Close session' })]
    });
    if (!answer.button.accept) {
      return;
    }
    this._busy.add(session.session_id);
    this.onChanged();
    try {
      const closing = await this._api.closeSession(session.session_id);
      this._result.textContent = closing.message + (closing.tx_hash ? ` (transaction ${shortAddress(closing.tx_hash, 6)})` : '');
      this._result.title = closing.tx_hash ?? '';
      this._result.dataset.closed = String(closing.closed);
    } catch (error) {
      this._result.textContent = `Could not close ${shortAddress(session.session_id)}: ${(error as Error).message || error}`;
      this._result.title = '';
      delete this._result.dataset.closed;
    } finally {
      this._busy.delete(session.session_id);
      this.onChanged();
    }
  }
}
