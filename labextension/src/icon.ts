/** The Golem icon: a blue hexagon with three white dots (as the golem-python kernel logo). */

import { LabIcon } from '@jupyterlab/ui-components';

const svgstr =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="16" height="16">' +
  '<polygon points="58.60,47.36 32.00,62.72 5.40,47.36 5.40,16.64 32.00,1.28 58.60,16.64" fill="#1f6feb"/>' +
  '<polygon points="50.29,42.56 32.00,53.12 13.71,42.56 13.71,21.44 32.00,10.88 50.29,21.44" fill="none" stroke="#fff" stroke-width="3.84"/>' +
  '<circle cx="32.00" cy="19.20" r="5.44" fill="#fff"/>' +
  '<circle cx="43.09" cy="38.40" r="5.44" fill="#fff"/>' +
  '<circle cx="20.91" cy="38.40" r="5.44" fill="#fff"/>' +
  '</svg>';

export const golemIcon = new LabIcon({ name: 'golem-jupyter-labextension:golem', svgstr });
