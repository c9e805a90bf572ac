/** A tiny helper to build DOM elements: h('td', {className: 'x', title: 'y'}, 'text'). */

export type Child = Node | string | number | null | undefined | false;

export interface IAttributes {
  className?: string;
  title?: string;
  /** data-* attributes, written as `data-<key>`. */
  data?: Record<string, string | number | boolean | null | undefined>;
  /** Any other attribute. */
  attrs?: Record<string, string | number | boolean | null | undefined>;
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: IAttributes = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (attributes.className) {
    element.className = attributes.className;
  }
  if (attributes.title) {
    element.title = attributes.title;
  }
  for (const [key, value] of Object.entries(attributes.data ?? {})) {
    if (value !== null && value !== undefined) {
      element.setAttribute(`data-${key}`, String(value));
    }
  }
  for (const [key, value] of Object.entries(attributes.attrs ?? {})) {
    if (value !== null && value !== undefined && value !== false) {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Append children (strings become text nodes; null, undefined and false are skipped). */
export function append(parent: Node, children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace all children of `parent`. */
export function replaceChildren(parent: Element, ...children: (Child | Child[])[]): void {
  while (parent.firstChild) {
    parent.removeChild(parent.firstChild);
  }
  append(parent, children);
}
