// Service graph: a layered left-to-right layout (external callers, then gateways, then services
// by hop count from them), edges as curves with arrowheads and text labels. mTLS is shown by
// line style (solid/dashed) and by words in the label, not by colour alone.

import { s, h, clear } from './dom.js';

const NODE_W = 170;
const NODE_H = 48;
const COL_W = 390;
const ROW_H = 100;
const PAD = 30;
/** How far above the boxes an edge that skips a column arcs (so it crosses no box between). */
const ARC = 60;

/** Column of each node: longest path from a root, roots being externals and gateways. */
export function layout(graph) {
  const nodes = graph.nodes || [];
  const edges = graph.edges || [];
  const rank = new Map();
  const base = { external: 0, gateway: 1, service: 2 };
  const hasExternal = nodes.some((n) => n.kind === 'external');
  for (const n of nodes) rank.set(n.id, Math.max(0, (base[n.kind] ?? 2) - (hasExternal ? 0 : 1)));
  // Services with an inbound edge from a lower column move right of it; bounded passes so a
  // cycle cannot loop forever.
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const e of edges) {
      if (!rank.has(e.from) || !rank.has(e.to)) continue;
      const target = nodes.find((n) => n.id === e.to);
      if (!target || target.kind !== 'service') continue;
      const want = rank.get(e.from) + 1;
      if (rank.get(e.to) < want && want <= nodes.length + 2) {
        rank.set(e.to, want);
        changed = true;
      }
    }
    if (!changed) break;
  }
  // Compact: drop empty columns.
  const used = [...new Set(rank.values())].sort((a, b) => a - b);
  const cols = new Map(used.map((r, i) => [r, i]));
  const byCol = new Map();
  for (const n of nodes) {
    const c = cols.get(rank.get(n.id));
    if (!byCol.has(c)) byCol.set(c, []);
    byCol.get(c).push(n);
  }
  const pos = new Map();
  let maxRows = 1;
  for (const [c, list] of byCol) {
    list.sort((a, b) => String(a.label).localeCompare(String(b.label)));
    maxRows = Math.max(maxRows, list.length);
    list.forEach((n, i) => pos.set(n.id, { x: PAD + c * COL_W, y: PAD + i * ROW_H, col: c }));
  }
  // Edges that skip a column arc over the boxes in between: leave room for them at the top.
  const skips = (e) => pos.has(e.from) && pos.has(e.to) && pos.get(e.to).col - pos.get(e.from).col > 1;
  const top = edges.some(skips) ? ARC : 0;
  // Centre shorter columns vertically.
  for (const [, list] of byCol) {
    const offset = ((maxRows - list.length) * ROW_H) / 2 + top;
    for (const n of list) pos.get(n.id).y += offset;
  }
  const width = PAD * 2 + Math.max(1, used.length) * COL_W - (COL_W - NODE_W);
  const height = PAD * 2 + top + maxRows * ROW_H - (ROW_H - NODE_H) + 30;
  return { pos, width, height };
}

function edgeLabel(e) {
  return `${e.requests} req · ${e.denies} denied · ${e.mtls ? 'mTLS' : 'no mTLS'}`;
}

function truncate(t, n) {
  t = String(t);
  return t.length > n ? t.slice(0, n - 1) + '…' : t;
}

function marker(id, cls) {
  return s('marker', { id, viewBox: '0 0 10 10', refX: '10', refY: '5', markerWidth: '11', markerHeight: '11', markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
    s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: cls }));
}

/** Render into `container` (replacing its content) and fill the edge table. */
export function renderGraph(container, table, graph) {
  const nodes = graph.nodes || [];
  const edges = graph.edges || [];
  clear(container);
  if (nodes.length === 0) {
    container.append(h('p', { class: 'empty' }, 'No traffic has been seen yet.'));
  } else {
    const { pos, width, height } = layout(graph);
    const title = s('title', { id: 'graph-title' }, 'Service graph');
    const desc = s('desc', { id: 'graph-desc' },
      `${nodes.length} nodes and ${edges.length} connections. The same data is in the table below the graph.`);
    const svg = s('svg', {
      viewBox: `0 0 ${width} ${height}`, width, height, role: 'group',
      'aria-labelledby': 'graph-title', 'aria-describedby': 'graph-desc', 'data-testid': 'graph-svg',
    }, title, desc, s('defs', {}, marker('arrow-mtls', 'arrow mtls'), marker('arrow-plain', 'arrow plain')));

    const edgeLayer = s('g', { class: 'edges' });
    const labelLayer = s('g', { class: 'edge-labels' });
    for (const e of edges) {
      const a = pos.get(e.from);
      const b = pos.get(e.to);
      if (!a || !b) continue;
      let d;
      let lx;
      let ly;
      if (e.from === e.to) {
        const x = a.x + NODE_W / 2;
        d = `M ${x - 20} ${a.y} C ${x - 40} ${a.y - 45}, ${x + 40} ${a.y - 45}, ${x + 20} ${a.y}`;
        lx = x;
        ly = a.y - 40;
      } else if (b.col > a.col + 1) {
        // Skips a column: a straight line would run through the boxes between (and its label
        // would cover one), so arc above them, from the top of one box to the top of the other.
        const x1 = a.x + NODE_W * 0.75, y1 = a.y, x2 = b.x + NODE_W * 0.25, y2 = b.y;
        const peak = Math.min(y1, y2) - ARC;
        d = `M ${x1} ${y1} C ${x1} ${peak}, ${x2} ${peak}, ${x2} ${y2}`;
        lx = (x1 + x2) / 2;
        ly = Math.min(y1, y2) - ARC * 0.75 + 4;
      } else if (b.col > a.col) {
        const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
        const mx = (x1 + x2) / 2;
        d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
        lx = mx;
        ly = (y1 + y2) / 2 + 4;
      } else {
        // Same or earlier column: loop below the boxes so the line does not cross them.
        const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2, y2 = b.y + NODE_H;
        const dip = Math.max(y1, y2) + 40;
        d = `M ${x1} ${y1} C ${x1} ${dip}, ${x2} ${dip}, ${x2} ${y2}`;
        lx = (x1 + x2) / 2;
        ly = dip - 4;
      }
      const cls = e.mtls ? 'mtls' : 'plain';
      const text = edgeLabel(e);
      edgeLayer.append(s('g', {
        class: `edge ${cls}${e.denies > 0 ? ' has-denies' : ''}`, 'data-from': e.from, 'data-to': e.to,
        'data-mtls': String(!!e.mtls), 'data-testid': `edge-${e.from}-${e.to}`,
      }, s('title', {}, `${e.from} → ${e.to}: ${text}`),
      s('path', { d, class: `edge-line ${cls}`, 'marker-end': `url(#arrow-${cls})` })));
      const w = text.length * 6.6 + 10;
      labelLayer.append(s('g', { class: `edge-label ${cls}`, 'data-from': e.from, 'data-to': e.to },
        s('rect', { x: lx - w / 2, y: ly - 12, width: w, height: 17, rx: 3 }),
        s('text', { x: lx, y: ly, 'text-anchor': 'middle' }, text)));
    }

    const nodeLayer = s('g', { class: 'nodes' });
    for (const n of nodes) {
      const p = pos.get(n.id);
      const inbound = edges.filter((e) => e.to === n.id).length;
      const outbound = edges.filter((e) => e.from === n.id).length;
      const kind = ['service', 'gateway', 'external'].includes(n.kind) ? n.kind : 'service';
      const rx = kind === 'gateway' ? NODE_H / 2 : 6;
      nodeLayer.append(s('g', {
        class: `node ${kind}`, 'data-id': n.id, 'data-kind': kind, transform: `translate(${p.x} ${p.y})`,
        tabindex: '0', role: 'img', 'data-testid': `node-${n.id}`,
        'aria-label': `${n.label} (${kind}): ${inbound} inbound, ${outbound} outbound connections`,
      }, s('title', {}, `${n.label} (${kind})`),
      s('rect', { width: NODE_W, height: NODE_H, rx, class: 'node-box' }),
      s('text', { x: NODE_W / 2, y: 21, 'text-anchor': 'middle', class: 'node-label' }, truncate(n.label, 22)),
      s('text', { x: NODE_W / 2, y: 38, 'text-anchor': 'middle', class: 'node-kind' }, kind)));
    }
    svg.append(edgeLayer, nodeLayer, labelLayer);
    container.append(svg);
  }

  const tbody = table.tBodies[0];
  clear(tbody);
  for (const e of edges) {
    tbody.append(h('tr', { 'data-from': e.from, 'data-to': e.to },
      h('td', {}, e.from), h('td', {}, e.to), h('td', { class: 'num' }, String(e.requests)),
      h('td', { class: 'num' }, String(e.denies)), h('td', {}, e.mtls ? 'Yes' : 'No')));
  }
  if (edges.length === 0) tbody.append(h('tr', {}, h('td', { colspan: '5' }, 'No connections.')));
}
