// rtcedge demo page: WHIP publish, WHEP play, stop, ICE restart and stats.
// No build step and no dependencies. Tests use window.rtcedge:
//   publish(stream), play(stream) -> Promise<Location>
//   stop(which)                   -> Promise (which: 'publisher', 'player' or all)
//   restartIce(which)             -> Promise
//   stats() -> Promise<{publisher:{state, framesSent, selectedRemote},
//                       player:{state, framesDecoded, selectedRemote}}>
'use strict';

(function () {
  var GATHER_TIMEOUT_MS = 3000;
  var sessions = { publisher: null, player: null };

  function $(id) { return document.getElementById(id); }

  function showError(err) {
    var el = $('error');
    if (!err) { el.hidden = true; el.textContent = ''; return; }
    el.hidden = false;
    el.textContent = String(err.message || err);
  }

  // endpoint returns the WHIP/WHEP URL for stream on the configured server.
  function endpoint(kind, stream) {
    var base = $('server').value.trim() || window.location.href;
    var path = stream.split('/').map(encodeURIComponent).join('/');
    return new URL('/' + kind + '/' + path, base).href;
  }

  function requestHeaders(contentType, extra) {
    var h = {};
    if (contentType) { h['Content-Type'] = contentType; }
    var token = $('token').value.trim();
    if (token) { h['Authorization'] = 'Bearer ' + token; }
    for (var k in (extra || {})) { h[k] = extra[k]; }
    return h;
  }

  // problemText describes a failed response, using problem+json's detail.
  async function problemText(resp) {
    var text = 'HTTP ' + resp.status;
    try {
      var ct = resp.headers.get('Content-Type') || '';
      if (ct.indexOf('json') >= 0) {
        var p = await resp.json();
        if (p.detail || p.title) { text += ': ' + (p.detail || p.title); }
      } else {
        var body = await resp.text();
        if (body) { text += ': ' + body.slice(0, 300); }
      }
    } catch (e) { /* keep the status */ }
    return text;
  }

  function waitGathering(pc, ms) {
    return new Promise(function (resolve) {
      if (pc.iceGatheringState === 'complete') { resolve(); return; }
      var timer = setTimeout(done, ms);
      function check() { if (pc.iceGatheringState === 'complete') { done(); } }
      function done() {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      }
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  function sdpLines(sdp) { return sdp.split(/\r?\n/).filter(function (l) { return l !== ''; }); }

  function sdpAttr(sdp, name) {
    var lines = sdpLines(sdp);
    for (var i = 0; i < lines.length; i++) {
      if (lines[i].indexOf('a=' + name + ':') === 0) { return lines[i].slice(name.length + 3); }
    }
    return '';
  }

  // restartedAnswer rebuilds the previous answer with the new ICE
  // credentials and candidates (from the PATCH response) in every m-section.
  function restartedAnswer(prev, ufrag, pwd, candidates) {
    var out = [];
    var inMedia = false;
    function flush() {
      if (!inMedia) { return; }
      candidates.forEach(function (c) { out.push(c); });
      out.push('a=end-of-candidates');
    }
    sdpLines(prev).forEach(function (line) {
      if (line.indexOf('m=') === 0) { flush(); inMedia = true; out.push(line); return; }
      if (line.indexOf('a=candidate:') === 0 || line === 'a=end-of-candidates') { return; }
      if (line.indexOf('a=ice-ufrag:') === 0) { out.push('a=ice-ufrag:' + ufrag); return; }
      if (line.indexOf('a=ice-pwd:') === 0) { out.push('a=ice-pwd:' + pwd); return; }
      if (line.indexOf('o=') === 0) {
        var f = line.split(' ');
        if (f.length >= 3 && /^\d+$/.test(f[2])) { f[2] = String(Number(f[2]) + 1); }
        out.push(f.join(' '));
        return;
      }
      out.push(line);
    });
    flush();
    return out.join('\r\n') + '\r\n';
  }

  async function start(which, stream) {
    stream = (stream || $('stream').value).trim();
    if (!stream) { throw new Error('enter a stream key'); }
    await stop(which);
    var pc = new RTCPeerConnection();
    var s = { pc: pc, stream: stream, location: null, etag: null, answer: null, media: null, lastBytes: 0, lastTime: 0 };
    sessions[which] = s;
    try {
      if (which === 'publisher') {
        s.media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
        $('local-video').srcObject = s.media;
        s.media.getTracks().forEach(function (t) {
          pc.addTransceiver(t, { direction: 'sendonly', streams: [s.media] });
        });
      } else {
        pc.addTransceiver('video', { direction: 'recvonly' });
        pc.addTransceiver('audio', { direction: 'recvonly' });
        var remote = new MediaStream();
        $('remote-video').srcObject = remote;
        pc.ontrack = function (ev) { remote.addTrack(ev.track); };
      }
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathering(pc, GATHER_TIMEOUT_MS);
      var url = endpoint(which === 'publisher' ? 'whip' : 'whep', stream);
      var resp = await fetch(url, { method: 'POST', headers: requestHeaders('application/sdp'), body: pc.localDescription.sdp });
      if (resp.status !== 201) { throw new Error((which === 'publisher' ? 'publish: ' : 'play: ') + await problemText(resp)); }
      var loc = resp.headers.get('Location');
      if (!loc) { throw new Error('the 201 has no Location header'); }
      s.location = new URL(loc, url).href; // relative to the request URL (same origin as the page by default)
      s.etag = resp.headers.get('ETag');
      s.answer = await resp.text();
      await pc.setRemoteDescription({ type: 'answer', sdp: s.answer });
      showError(null);
      return s.location;
    } catch (e) {
      await stop(which);
      throw e;
    }
  }

  async function stopOne(which) {
    var s = sessions[which];
    if (!s) { return; }
    sessions[which] = null;
    if (s.location) {
      try {
        await fetch(s.location, { method: 'DELETE', headers: requestHeaders('') });
      } catch (e) { /* the session expires on its own */ }
    }
    s.pc.close();
    if (s.media) { s.media.getTracks().forEach(function (t) { t.stop(); }); }
    $(which === 'publisher' ? 'local-video' : 'remote-video').srcObject = null;
  }

  async function stop(which) {
    if (which) { return stopOne(which); }
    await stopOne('publisher');
    await stopOne('player');
  }

  async function restartIce(which) {
    var s = sessions[which];
    if (!s || !s.location) { throw new Error('no ' + which + ' session to restart'); }
    var pc = s.pc;
    pc.restartIce();
    var offer = await pc.createOffer({ iceRestart: true });
    await pc.setLocalDescription(offer);
    var frag = '';
    var opts = sdpAttr(offer.sdp, 'ice-options');
    if (opts) { frag += 'a=ice-options:' + opts + '\r\n'; }
    frag += 'a=ice-ufrag:' + sdpAttr(offer.sdp, 'ice-ufrag') + '\r\n';
    frag += 'a=ice-pwd:' + sdpAttr(offer.sdp, 'ice-pwd') + '\r\n';
    var resp = await fetch(s.location, {
      method: 'PATCH',
      headers: requestHeaders('application/trickle-ice-sdpfrag', { 'If-Match': s.etag || '*' }),
      body: frag
    });
    if (resp.status !== 200) {
      var msg = 'ICE restart: ' + await problemText(resp);
      await pc.setLocalDescription({ type: 'rollback' });
      throw new Error(msg);
    }
    var etag = resp.headers.get('ETag');
    if (etag) { s.etag = etag; }
    var body = await resp.text();
    var candidates = sdpLines(body).filter(function (l) { return l.indexOf('a=candidate:') === 0; });
    s.answer = restartedAnswer(s.answer, sdpAttr(body, 'ice-ufrag'), sdpAttr(body, 'ice-pwd'), candidates);
    await pc.setRemoteDescription({ type: 'answer', sdp: s.answer });
    showError(null);
  }

  function candidateText(c) {
    if (!c) { return ''; }
    return (c.address || c.ip || '?') + ':' + c.port + ' ' + (c.candidateType || '');
  }

  function addrOf(c) { return c ? (c.address || c.ip || '') + ':' + c.port : ''; }

  // snapshot reads one session's getStats into plain numbers and strings.
  async function snapshot(which) {
    var s = sessions[which];
    var out = { state: 'none', iceState: 'none', framesSent: 0, framesDecoded: 0, bytes: 0,
      selectedLocal: '', selectedRemote: '', local: '', remote: '' };
    if (!s) { return out; }
    out.state = s.pc.connectionState;
    out.iceState = s.pc.iceConnectionState;
    var report = await s.pc.getStats();
    var byId = new Map();
    var pairId = null;
    report.forEach(function (r) {
      byId.set(r.id, r);
      if (r.type === 'transport' && r.selectedCandidatePairId) { pairId = r.selectedCandidatePairId; }
      if (r.type === 'outbound-rtp') {
        out.bytes += r.bytesSent || 0;
        if (r.kind === 'video') { out.framesSent += r.framesSent || 0; }
      }
      if (r.type === 'inbound-rtp') {
        out.bytes += r.bytesReceived || 0;
        if (r.kind === 'video') { out.framesDecoded += r.framesDecoded || 0; }
      }
    });
    var pair = pairId ? byId.get(pairId) : null;
    if (!pair) {
      report.forEach(function (r) {
        if (!pair && r.type === 'candidate-pair' && r.state === 'succeeded' && r.nominated) { pair = r; }
      });
    }
    if (pair) {
      var l = byId.get(pair.localCandidateId);
      var r = byId.get(pair.remoteCandidateId);
      out.selectedLocal = addrOf(l);
      out.selectedRemote = addrOf(r);
      out.local = candidateText(l);
      out.remote = candidateText(r);
    }
    return out;
  }

  async function stats() {
    var p = await snapshot('publisher');
    var q = await snapshot('player');
    return {
      publisher: { state: p.state, iceState: p.iceState, framesSent: p.framesSent, selectedLocal: p.selectedLocal, selectedRemote: p.selectedRemote },
      player: { state: q.state, iceState: q.iceState, framesDecoded: q.framesDecoded, selectedLocal: q.selectedLocal, selectedRemote: q.selectedRemote }
    };
  }

  function render(which, snap, bitrate) {
    var rows = [
      ['connection', snap.state],
      ['ICE', snap.iceState],
      ['local', snap.local],
      ['remote', snap.remote],
      ['bitrate', Math.round(bitrate / 1000) + ' kbit/s'],
      which === 'publisher' ? ['frames sent', snap.framesSent] : ['frames decoded', snap.framesDecoded]
    ];
    var dl = $('stats-' + which);
    dl.textContent = '';
    rows.forEach(function (row) {
      var dt = document.createElement('dt');
      dt.textContent = row[0];
      var dd = document.createElement('dd');
      dd.textContent = String(row[1]);
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
  }

  async function refresh() {
    var roles = ['publisher', 'player'];
    for (var i = 0; i < roles.length; i++) {
      var which = roles[i];
      try {
        var s = sessions[which];
        var snap = await snapshot(which);
        var bitrate = 0;
        if (s) {
          var now = performance.now();
          if (s.lastTime && now > s.lastTime) { bitrate = (snap.bytes - s.lastBytes) * 8000 / (now - s.lastTime); }
          s.lastBytes = snap.bytes;
          s.lastTime = now;
        }
        render(which, snap, Math.max(0, bitrate));
      } catch (e) { /* the session closed while reading */ }
    }
  }

  function onClick(id, fn) {
    $(id).addEventListener('click', function () { fn().catch(showError); });
  }

  onClick('publish', function () { return start('publisher'); });
  onClick('play', function () { return start('player'); });
  onClick('stop-publisher', function () { return stop('publisher'); });
  onClick('stop-player', function () { return stop('player'); });
  onClick('restart-publisher', function () { return restartIce('publisher'); });
  onClick('restart-player', function () { return restartIce('player'); });
  setInterval(refresh, 1000);
  refresh();

  window.rtcedge = {
    publish: function (stream) { return start('publisher', stream); },
    play: function (stream) { return start('player', stream); },
    stop: stop,
    restartIce: restartIce,
    stats: stats
  };
})();
