// The /status page: reads GET /v1/status and GET /v1/streams every 2 s and
// renders them with textContent only (stream keys come from clients).
'use strict';
(() => {
  const tokenInput = document.getElementById('token');
  // A token may come in the fragment (/status#token=T), which is never sent
  // to the server; it is kept for this tab only.
  const frag = new URLSearchParams(location.hash.slice(1));
  if (frag.get('token')) {
    sessionStorage.setItem('rtcedge-status-token', frag.get('token'));
    history.replaceState(null, '', location.pathname);
  }
  tokenInput.value = sessionStorage.getItem('rtcedge-status-token') || '';
  tokenInput.addEventListener('change', () => {
    sessionStorage.setItem('rtcedge-status-token', tokenInput.value);
    refresh();
  });

  async function get(path) {
    const headers = {};
    if (tokenInput.value) headers.Authorization = 'Bearer ' + tokenInput.value;
    const resp = await fetch(path, { headers, cache: 'no-store' });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(path + ': ' + resp.status + ' ' + (body.detail || body.message || ''));
    return body;
  }
  const num = (v) => Number(v || 0);
  const kbit = (v) => (num(v) / 1000).toFixed(1);
  const label = (v, prefix) => String(v || '').replace(prefix, '').toLowerCase();

  function fill(id, rows) {
    const tbody = document.querySelector('#' + id + ' tbody');
    tbody.replaceChildren(...rows.map((cells) => {
      const tr = document.createElement('tr');
      for (const c of cells) {
        const td = document.createElement('td');
        const [text, cls] = Array.isArray(c) ? c : [c, ''];
        td.textContent = String(text);
        if (typeof text === 'number' || /^\d+(\.\d+)?$/.test(String(text))) td.className = 'n';
        if (cls) td.classList.add(cls);
        tr.append(td);
      }
      return tr;
    }));
  }

  async function refresh() {
    const meta = document.getElementById('meta');
    try {
      const [st, streams] = await Promise.all([get('/v1/status'), get('/v1/streams')]);
      fill('origins', (st.origins || []).map((o) => {
        const h = label(o.health, 'ORIGIN_HEALTH_');
        return [o.id, o.kind || '', o.zone || '', [h, h], num(o.streams), num(o.capacity) || '∞', num(o.publishers), num(o.viewers)];
      }));
      fill('relays', (st.relays || []).map((r) => [r.id, r.zone || '', r.reachable ? ['yes', 'yes'] : ['no', 'no'],
        num(r.sessions), num(r.packetsPerSecondIn), num(r.packetsPerSecondOut), kbit(r.bitsPerSecondIn), kbit(r.bitsPerSecondOut)]));
      fill('streams', (streams.streams || []).map((s) => [s.stream, s.originId || '', label(s.source, 'STREAM_SOURCE_'),
        s.publisherSessionId || '', num(s.viewers), kbit(s.bitrateInBps), kbit(s.bitrateOutBps)]));
      meta.className = st.partial ? 'partial' : '';
      meta.textContent = `${num(st.streams)} streams, ${num(st.publishers)} publishers, ${num(st.viewers)} viewers` +
        (st.partial ? ' (some relays did not answer)' : '') + ` — updated ${new Date().toLocaleTimeString()}`;
      document.body.dataset.loaded = 'true';
    } catch (e) {
      meta.className = 'error';
      meta.textContent = String(e.message || e);
    }
  }
  refresh();
  setInterval(refresh, 2000);
})();
