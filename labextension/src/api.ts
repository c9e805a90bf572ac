/**
 * Requests to the golem_jupyter server extension (`<base url>/golem/api/...`).
 *
 * Every amount is a decimal string of wei. Errors come back as
 * `{"error": "..."}` with a non-2xx status; they are raised as `ApiError`
 * carrying that text, or a plain explanation when the server extension is not
 * there at all.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface INetwork {
  name: string;
  rpc_url: string;
  chain_id: number;
  escrow: string;
  registry: string;
}

export interface IWallet {
  address: string;
  balance_wei: string;
  credited_wei: string;
}

export interface IDevnetProvider {
  address: string;
  endpoint: string;
  pid: number | null;
  price_per_cpu_second_wei: string;
  gpus: number;
}

export interface IDevnet {
  running: boolean;
  rpc_url: string | null;
  chain_id: number | null;
  pid: number | null;
  providers: IDevnetProvider[];
  started_here: boolean;
}

export interface IStatus {
  network: INetwork | null;
  reachable: boolean;
  error: string | null;
  wallet: IWallet | null;
  escrow: { locked_wei: string; open_sessions: number } | null;
  devnet: IDevnet | null;
}

export interface IOffer {
  provider: string;
  endpoint: string;
  price_per_cpu_second_wei: string;
  price_per_gpu_second_wei: string;
  start_fee_wei: string;
  cpus: number;
  gpus: number;
  gpu_model: string;
  memory_bytes: number;
  reputation: number | null;
  /** How many FaultReported events the escrow holds against the provider (wrong results it was reported for). */
  faults: number;
  /** What the provider runs requestors' code in: 'bwrap' (a bubblewrap sandbox) or 'none' (unconfined). */
  sandbox: string;
  reachable: boolean;
}

export interface IProviders {
  network: string;
  offers: IOffer[];
}

export type JobStatus = 'pending' | 'submitted' | 'confirmed' | 'failed' | 'abandoned' | string;

export interface IJob {
  graph_id: string;
  session_id: string;
  label: string | null;
  notebook: string | null;
  run_id: string | null;
  n_tasks: number;
  amount_wei: string;
  status: JobStatus;
  tx_hash: string | null;
  providers: string[];
  created_at: number;
  updated_at: number;
}

export interface IJobs {
  total: number;
  limit: number;
  offset: number;
  jobs: IJob[];
}

export interface IPayout {
  provider: string;
  cpu_seconds: number;
  gpu_seconds: number;
  amount_wei: string;
  cumulative_wei: string;
}

export interface ISession {
  session_id: string;
  label: string | null;
  status: string;
  budget_wei: string;
  spent_wei: string;
  settled_wei: string;
  network: string | null;
  chain_id: number | null;
  escrow: string | null;
  requestor: string | null;
  tx_hash: string | null;
  deadline: number | null;
  run_id: string | null;
}

/** What `--verify` did in a job (DESIGN.md section 6). */
export interface IVerification {
  checked: number;
  reruns: number;
  mismatches: number;
  /** What the re-runs cost (paid to the providers that ran them; part of the job's amount). */
  cost_wei: string;
  reported: { provider: string; task: string; tx_hash: string | null }[];
}

export interface IReceipt extends IJob {
  /** null when nothing was checked. */
  verification?: IVerification | null;
  payouts: IPayout[];
  block_number: number | null;
  gas_used: number | null;
  error: string | null;
  attempts: number | null;
  session: ISession | null;
}

/** One of the wallet's escrow sessions, with the chain's numbers now (`golem sessions`). */
export interface IEscrowSession {
  session_id: string;
  label: string | null;
  status: string;
  created_at: number;
  deposited_wei: string;
  paid_wei: string;
  /** Held in open allocations and not paid: only their providers can draw on it or release it. */
  allocated_wei: string;
  /** The unallocated remainder, which a close (or reclaim) returns at once. */
  refundable_now_wei: string;
  returned_wei: string;
  open_allocations: number;
  closed: boolean;
  closable_at: number;
  /** When the rest can be closed, in words ("now", "closed", ...). */
  closable: string;
}

export interface IEscrowSessions {
  network: string;
  wallet: string;
  sessions: IEscrowSession[];
}

/** What a Close did. */
export interface IClosing {
  session_id: string;
  closed: boolean;
  returned_wei: string;
  tx_hash: string | null;
  holdouts: { provider: string; locked_wei: string; reason: string }[];
  closable_at: number;
  message: string;
}

/** A request to the Golem API that failed; `message` is meant for the user. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null = null
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Statuses after which a job no longer changes. */
export const FINAL_STATUSES: ReadonlySet<string> = new Set(['confirmed', 'failed', 'abandoned']);

/** The client of the Golem REST API under the Jupyter server's base URL. */
export class GolemApi {
  constructor(readonly serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** The network (name, URL or file) asked for in `?network=`; '' means the server's default. */
  network = '';

  status(): Promise<IStatus> {
    return this.request<IStatus>(['status'], { network: this.network });
  }

  providers(): Promise<IProviders> {
    return this.request<IProviders>(['providers'], { network: this.network });
  }

  jobs(limit = 50, offset = 0): Promise<IJobs> {
    return this.request<IJobs>(['jobs'], { limit: String(limit), offset: String(offset) });
  }

  async job(graphId: string): Promise<IReceipt> {
    const reply = await this.request<{ job: IReceipt }>(['jobs', graphId]);
    return reply.job;
  }

  /** The wallet's escrow sessions that are not closed (`all`: closed ones too). */
  sessions(all = false): Promise<IEscrowSessions> {
    return this.request<IEscrowSessions>(['sessions'], { network: this.network, all: all ? '1' : '' });
  }

  /** Close a session: the providers' releases, then the cooperative close (or a reclaim). */
  async closeSession(sessionId: string): Promise<IClosing> {
    const reply = await this.request<{ closing: IClosing }>(
      ['sessions', sessionId, 'close'],
      { network: this.network },
      { method: 'POST', body: '{}' }
    );
    return reply.closing;
  }

  devnet(): Promise<IDevnet> {
    return this.request<IDevnet>(['devnet']);
  }

  /** Start a local market (`providers` agents) or stop the one running. */
  setDevnet(action: 'start' | 'stop', providers = 2): Promise<IDevnet> {
    const body = action === 'start' ? { action, providers } : { action };
    return this.request<IDevnet>(['devnet'], {}, { method: 'POST', body: JSON.stringify(body) });
  }

  /** GET (or `init`) `golem/api/<path>` with the non-empty `query` values, parsed as JSON. */
  async request<T>(path: string[], query: Record<string, string> = {}, init: RequestInit = {}): Promise<T> {
    const base = URLExt.join(
      this.serverSettings.baseUrl,
      'golem',
      'api',
      ...path.map(part => encodeURIComponent(part))
    );
    const params = Object.entries(query).filter(([, value]) => value !== '');
    const url = params.length ? base + URLExt.objectToQueryString(Object.fromEntries(params)) : base;
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.serverSettings);
    } catch (error) {
      throw new ApiError(`Cannot reach the Jupyter server: ${(error as Error).message || error}`);
    }
    const text = await response.text();
    let data: any = undefined;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    if (!response.ok) {
      throw new ApiError(errorMessage(response, data), response.status);
    }
    if (data === undefined) {
      throw new ApiError(`The Golem API answered ${url} with something that is not JSON.`, response.status);
    }
    return data as T;
  }
}

function errorMessage(response: Response, data: any): string {
  if (data && typeof data.error === 'string' && data.error) {
    return data.error;
  }
  if (data && typeof data.message === 'string' && data.message) {
    return `${data.message} (HTTP ${response.status})`;
  }
  if (response.status === 404) {
    return (
      'The Golem server extension is not running in this Jupyter server (HTTP 404). ' +
      'Install golem-jupyter in the environment of this server and restart it; ' +
      '`jupyter server extension list` should show golem_jupyter enabled.'
    );
  }
  if (response.status === 403) {
    return 'The Jupyter server refused the request (HTTP 403): reload the page to log in again.';
  }
  return `The Golem API answered HTTP ${response.status} ${response.statusText}`.trim() + '.';
}
