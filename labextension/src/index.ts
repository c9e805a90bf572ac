/**
 * golem-jupyter-labextension: the Golem side panel (wallet, market, jobs and
 * receipts) and the `golem:insert-connect` command.
 */

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { GolemApi } from './api';
import { CommandIDs, insertConnectCell } from './commands';
import { golemIcon } from './icon';
import { DEFAULT_POLL_INTERVAL, GolemPanel } from './panel';

const PLUGIN_ID = 'golem-jupyter-labextension:plugin';
const PALETTE_CATEGORY = 'Golem';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The Golem side panel: wallet, market offers, jobs and their on-chain receipts.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ISettingRegistry, ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const api = new GolemApi(app.serviceManager.serverSettings);
    const panel = new GolemPanel(api);

    app.commands.addCommand(CommandIDs.insertConnect, {
      label: 'Insert Golem Connect Cell',
      caption: 'Insert `%load_ext golem_jupyter` and `%golem connect` at the top of the active notebook',
      icon: args => (args['isPalette'] ? undefined : golemIcon),
      isEnabled: () => tracker.currentWidget !== null,
      execute: () => {
        const notebook = tracker.currentWidget;
        if (!insertConnectCell(tracker, panel.network)) {
          return;
        }
        if (notebook) {
          app.shell.activateById(notebook.id);
        }
      }
    });
    panel.onInsertConnect = () => void app.commands.execute(CommandIDs.insertConnect);
    const updateInsert = () => {
      panel.setCanInsert(tracker.currentWidget !== null);
      app.commands.notifyCommandChanged(CommandIDs.insertConnect);
    };
    tracker.currentChanged.connect(updateInsert);
    updateInsert();

    if (palette) {
      palette.addItem({ command: CommandIDs.insertConnect, category: PALETTE_CATEGORY });
    }

    app.shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, 'golem-jupyter-panel');
    }

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = () =>
            panel.configure({
              pollInterval: (settings.get('pollInterval').composite as number) ?? DEFAULT_POLL_INTERVAL,
              network: (settings.get('network').composite as string) ?? ''
            });
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.error(`golem-jupyter: failed to load the settings of ${PLUGIN_ID}`, reason);
        });
    }
  }
};

export default plugin;
