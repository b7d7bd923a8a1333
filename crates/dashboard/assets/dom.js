// DOM helpers. Text always goes in through textContent / attributes, never parsed as HTML, so
// audit data (principals, paths, reasons) cannot inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') el.textContent = String(v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Create an HTML element: h('li', {class: 'x'}, 'text', child). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Create an SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Audit times may be RFC 3339 strings or Unix milliseconds. */
export function fmtTime(t) {
  if (t === null || t === undefined || t === '') return '';
  const d = new Date(typeof t === 'number' ? t : String(t));
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toLocaleString();
}

export function isoTime(t) {
  const d = new Date(typeof t === 'number' ? t : String(t));
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

export function str(v) {
  return v === null || v === undefined ? '' : String(v);
}
