/** The receipt of one job (a graph execution): settlement, payouts per provider, its session. */

import { IReceipt, IVerification } from './api';
import { Child, h } from './dom';
import { amount } from './amount';
import { exactWei, formatSeconds, formatTimestamp, formatWei, notebookName, shortAddress } from './formatting';

/** A status badge: pending, submitted, confirmed, failed, abandoned (or whatever the server says). */
export function statusBadge(status: string): HTMLElement {
  const known = ['pending', 'submitted', 'confirmed', 'failed', 'abandoned', 'open', 'closed', 'settled'];
  const kind = known.includes(status) ? status : 'other';
  return h('span', { className: `jp-GolemPanel-badge jp-GolemPanel-badge-${kind}`, data: { 'golem-badge': status } }, status);
}

function field(name: string, ...value: (Child | Child[])[]): HTMLElement[] {
  return [h('dt', {}, name), h('dd', {}, ...value)];
}

/** What verification did: tasks checked, mismatches refereed, providers reported (with the transaction). */
function renderVerification(verification: IVerification): Child[] {
  const reported = verification.reported.map(r => {
    const tx = mono(r.tx_hash ? shortAddress(r.tx_hash, 6) : 'no transaction (not reported on-chain)', 'reported-tx');
    tx.title = r.tx_hash ?? '';
    return h(
      'li',
      { data: { golem: 'reported', provider: r.provider }, title: r.provider },
      mono(shortAddress(r.provider)),
      ` returned a wrong result for ${r.task}; reported in `,
      tx
    );
  });
  return [
    h('h4', { className: 'jp-GolemPanel-subTitle' }, 'Verification'),
    h(
      'dl',
      { className: 'jp-GolemPanel-fields', data: { golem: 'receipt-verification' } },
      field('Checked', `${verification.checked} task${verification.checked === 1 ? '' : 's'}, ${verification.reruns} re-run${verification.reruns === 1 ? '' : 's'}`),
      field('Mismatches', `${verification.mismatches} (decided by a referee)`),
      field('Checks cost', amount(verification.cost_wei, 'receipt-verification-cost'))
    ),
    reported.length ? h('ul', { className: 'jp-GolemPanel-list' }, reported) : null
  ];
}

function mono(text: string | null | undefined, hook?: string): HTMLElement {
  return h('span', { className: 'jp-GolemPanel-mono jp-GolemPanel-break', data: { golem: hook } }, text || '—');
}

/** The receipt's body (the panel adds the frame and the close button). */
export function renderReceipt(receipt: IReceipt): HTMLElement {
  const payouts = receipt.payouts ?? [];
  const session = receipt.session;
  const payoutRows = payouts.map(payout =>
    h(
      'tr',
      { data: { golem: 'payout', provider: payout.provider } },
      h('td', { className: 'jp-GolemPanel-mono', title: payout.provider }, shortAddress(payout.provider)),
      h('td', { className: 'jp-GolemPanel-num' }, formatSeconds(payout.cpu_seconds)),
      h('td', { className: 'jp-GolemPanel-num' }, formatSeconds(payout.gpu_seconds)),
      h('td', { className: 'jp-GolemPanel-num', title: `cumulative ${formatWei(payout.cumulative_wei)} (${exactWei(payout.cumulative_wei)})` }, amount(payout.amount_wei))
    )
  );
  if (!payoutRows.length) {
    payoutRows.push(h('tr', { className: 'jp-GolemPanel-empty' }, h('td', { attrs: { colspan: 4 } }, 'No payouts.')));
  }
  const payoutTable = h(
    'table',
    { className: 'jp-GolemPanel-table', data: { golem: 'payouts' } },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', {}, 'Provider'),
        h('th', { className: 'jp-GolemPanel-num', title: 'CPU compute-seconds' }, 'CPU'),
        h('th', { className: 'jp-GolemPanel-num', title: 'GPU compute-seconds' }, 'GPU'),
        h('th', { className: 'jp-GolemPanel-num' }, 'Amount')
      )
    ),
    h('tbody', {}, payoutRows)
  );
  return h(
    'div',
    { className: 'jp-GolemPanel-receiptBody' },
    h(
      'dl',
      { className: 'jp-GolemPanel-fields' },
      field('Graph', mono(receipt.graph_id, 'receipt-graph-id')),
      field('Status', statusBadge(receipt.status)),
      field('Transaction', mono(receipt.tx_hash || (receipt.status === 'pending' ? 'not sent yet' : null), 'receipt-tx')),
      receipt.block_number !== null && receipt.block_number !== undefined ? field('Block', String(receipt.block_number)) : null,
      receipt.gas_used !== null && receipt.gas_used !== undefined ? field('Gas used', String(receipt.gas_used)) : null,
      receipt.attempts ? field('Attempts', String(receipt.attempts)) : null,
      receipt.error ? field('Error', h('span', { className: 'jp-GolemPanel-errorText' }, receipt.error)) : null,
      field('Cell', [receipt.label || '—', receipt.notebook ? ` · ${notebookName(receipt.notebook)}` : '']),
      field('Tasks', String(receipt.n_tasks)),
      field('Amount', amount(receipt.amount_wei, 'receipt-amount')),
      field('Created', formatTimestamp(receipt.created_at))
    ),
    h('h4', { className: 'jp-GolemPanel-subTitle' }, 'Payouts'),
    h('div', { className: 'jp-GolemPanel-tableWrap' }, payoutTable),
    receipt.verification ? renderVerification(receipt.verification) : null,
    session
      ? [
          h('h4', { className: 'jp-GolemPanel-subTitle' }, 'Session'),
          h(
            'dl',
            { className: 'jp-GolemPanel-fields', data: { golem: 'receipt-session' } },
            field('Id', mono(session.session_id)),
            session.label ? field('Label', session.label) : null,
            field('Status', statusBadge(session.status)),
            field(
              'Budget',
              h('span', {}, amount(session.budget_wei), '; spent ', amount(session.spent_wei), ', settled ', amount(session.settled_wei))
            ),
            field('Network', `${session.network ?? '—'}${session.chain_id !== null && session.chain_id !== undefined ? ` (chain ${session.chain_id})` : ''}`),
            field('Escrow', mono(session.escrow)),
            field('Requestor', mono(session.requestor)),
            field('Opened in', mono(session.tx_hash)),
            field('Deadline', formatTimestamp(session.deadline))
          )
        ]
      : null
  );
}
