/** The command that inserts a connect cell at the top of the active notebook. */

import { INotebookTracker } from '@jupyterlab/notebook';

export namespace CommandIDs {
  export const insertConnect = 'golem:insert-connect';
}

/** `value` as one argument of an IPython magic line (quoted when it has to be). */
export function magicArgument(value: string): string {
  return /^[^\s'"\\]+$/.test(value) ? value : JSON.stringify(value);
}

/** The source of the connect cell; `network` '' means the market's default. */
export function connectSource(network: string): string {
  const target = network.trim();
  return ['%load_ext golem_jupyter', target ? `%golem connect ${magicArgument(target)}` : '%golem connect'].join('\n');
}

/**
 * Insert the connect cell at the top of the current notebook and select it.
 * Returns false when there is no notebook to insert into.
 */
export function insertConnectCell(tracker: INotebookTracker, network: string): boolean {
  const panel = tracker.currentWidget;
  const notebook = panel?.content;
  const model = notebook?.model;
  if (!panel || !notebook || !model) {
    return false;
  }
  model.sharedModel.insertCell(0, { cell_type: 'code', source: connectSource(network), metadata: {} });
  notebook.deselectAll();
  notebook.mode = 'command';
  notebook.activeCellIndex = 0;
  const cell = notebook.widgets[0];
  if (cell) {
    void notebook.scrollToCell(cell);
  }
  return true;
}
