/**
 * An amount of money in the panel: short (4 significant digits, see formatWei),
 * the exact wei on hover and one click away (click again for the short form).
 */

import { h } from './dom';
import { exactWei, formatWei } from './formatting';

export function amount(value: string | null | undefined, golem?: string): HTMLElement {
  const short = formatWei(value);
  const exact = exactWei(value);
  const element = h(
    'span',
    {
      className: 'jp-GolemPanel-amount',
      title: `${exact} (click to show it exactly)`,
      data: { golem: golem ?? null, wei: value ?? null },
      attrs: { role: 'button', tabindex: 0, 'aria-pressed': 'false' }
    },
    short
  );
  const toggle = (event: Event) => {
    event.stopPropagation(); // an amount inside a clickable row does not open or close the row
    const showExact = element.getAttribute('aria-pressed') !== 'true';
    element.setAttribute('aria-pressed', String(showExact));
    element.textContent = showExact ? exact : short;
  };
  element.addEventListener('click', toggle);
  element.addEventListener('keydown', event => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      toggle(event);
    }
  });
  return element;
}
