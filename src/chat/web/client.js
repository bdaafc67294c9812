/*
 * A small Socket.IO v5 client over Engine.IO v4, for the bundled chat page.
 *
 * Engine.IO: the session starts with HTTP long-polling
 *   GET  <path>?EIO=4&transport=polling            -> "0{sid, upgrades, pingInterval, pingTimeout, maxPayload}"
 *   GET  <path>?EIO=4&transport=polling&sid=<sid>  -> packets from the server
 *   POST <path>?EIO=4&transport=polling&sid=<sid>  <- packets to the server
 * (several packets in one body are joined by the record separator 0x1e). The server pings
 * ("2"), the client answers with a pong ("3"). When the handshake offers "websocket" the
 * client probes ws(s)://host<path>?EIO=4&transport=websocket&sid=<sid> with "2probe"; on
 * "3probe" it pauses polling (waits for the pending GET and POST to finish), sends "5"
 * (upgrade) and carries on over the WebSocket, one packet per frame.
 *
 * Socket.IO (namespace "/" only, text packets only): "0" connect, "1" disconnect, "2" event,
 * "3" ack, "4" connect error; an event with an ack id is "2<id>[...]" and its ack "3<id>[...]".
 *
 * Usage:
 *   var socket = ChatIO.connect({ reconnectionDelay: 1000, reconnectionDelayMax: 5000 });
 *   socket.on('connect', fn); socket.on('disconnect', fn(reason));
 *   socket.on('connect_error', fn(err)); socket.on('reconnect_attempt', fn(n));
 *   socket.on('reconnect', fn(n)); socket.on('<event>', fn(...args[, ack]));
 *   socket.emit('<event>', ...args[, ackCallback])  -> false when not connected (nothing sent)
 *   socket.disconnect();  socket.id;  socket.connected;  socket.transport ("polling"/"websocket")
 *
 * When the connection drops (transport error or close, ping timeout) the socket reconnects
 * by itself with exponential backoff and jitter, until disconnect() is called. A disconnect
 * by the server ("io server disconnect") is final, as in the reference client.
 */
(function (root) {
  'use strict';

  var SEP = '\x1e';

  // ---------------------------------------------------------------- tiny event emitter

  function Emitter() {
    this._handlers = {};
  }
  Emitter.prototype.on = function (event, fn) {
    (this._handlers[event] = this._handlers[event] || []).push(fn);
    return this;
  };
  Emitter.prototype.off = function (event, fn) {
    var list = this._handlers[event];
    if (!list) return this;
    if (!fn) {
      delete this._handlers[event];
    } else {
      this._handlers[event] = list.filter(function (h) { return h !== fn; });
    }
    return this;
  };
  Emitter.prototype._fire = function (event) {
    var list = this._handlers[event];
    if (!list) return;
    var args = Array.prototype.slice.call(arguments, 1);
    list.slice().forEach(function (fn) {
      try {
        fn.apply(null, args);
      } catch (e) {
        if (root.console) root.console.error(e);
      }
    });
  };

  function inherit(Child) {
    Child.prototype = Object.create(Emitter.prototype);
    Child.prototype.constructor = Child;
  }

  function defaultOrigin() {
    if (root.location && root.location.origin && root.location.origin !== 'null') return root.location.origin;
    return 'http://localhost';
  }

  function cacheBuster() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  }

  // ---------------------------------------------------------------- Engine.IO v4

  function Engine(opts) {
    Emitter.call(this);
    this.origin = (opts.url || defaultOrigin()).replace(/\/+$/, '');
    this.path = opts.path || '/socket.io/';
    this.allowUpgrade = opts.upgrade !== false && typeof root.WebSocket === 'function';
    this.timeout = opts.timeout || 20000;
    this.state = 'closed';
    this.transport = null;
    this.sid = null;
    this.pingInterval = 25000;
    this.pingTimeout = 20000;
    this.writeBuffer = [];
    this.polling = false;
    this.writing = false;
    this.upgrading = false;
    this.pollController = null;
    this.postController = null;
    this.ws = null;
    this.probeWs = null;
    this.pingTimer = null;
    this.upgradeTimer = null;
  }
  inherit(Engine);

  Engine.prototype._url = function (transport, withSid) {
    var base = this.origin;
    if (transport === 'websocket') base = base.replace(/^http/, 'ws');
    var q = 'EIO=4&transport=' + transport;
    if (withSid) q += '&sid=' + encodeURIComponent(this.sid);
    if (transport === 'polling') q += '&t=' + cacheBuster();
    return base + this.path + '?' + q;
  };

  Engine.prototype.open = function () {
    var self = this;
    this.state = 'opening';
    var controller = new AbortController();
    this.pollController = controller;
    var timer = setTimeout(function () { controller.abort(); }, this.timeout);
    fetch(this._url('polling', false), { cache: 'no-store', credentials: 'same-origin', signal: controller.signal })
      .then(function (res) {
        if (!res.ok) throw new Error('handshake failed with HTTP ' + res.status);
        return res.text();
      })
      .then(function (body) {
        clearTimeout(timer);
        if (self.state !== 'opening') return;
        self.pollController = null;
        var packets = body.split(SEP);
        var first = packets.shift();
        if (first.charAt(0) !== '0') throw new Error('handshake: expected an open packet');
        var hs = JSON.parse(first.slice(1));
        if (!hs || typeof hs.sid !== 'string') throw new Error('handshake: no sid');
        self.sid = hs.sid;
        if (typeof hs.pingInterval === 'number') self.pingInterval = hs.pingInterval;
        if (typeof hs.pingTimeout === 'number') self.pingTimeout = hs.pingTimeout;
        self.state = 'open';
        self.transport = 'polling';
        self._resetPingTimer();
        self._fire('open');
        packets.forEach(function (p) { self._onPacket(p); });
        if (self.state !== 'open') return;
        self._poll();
        self._flush();
        if (self.allowUpgrade && Array.isArray(hs.upgrades) && hs.upgrades.indexOf('websocket') !== -1) {
          self._probe();
        }
      })
      .catch(function (err) {
        clearTimeout(timer);
        if (self.state === 'opening' || self.state === 'open') {
          self._onClose('transport error', err);
        }
      });
  };

  Engine.prototype._resetPingTimer = function () {
    var self = this;
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(function () {
      self._onClose('ping timeout');
    }, this.pingInterval + this.pingTimeout);
  };

  Engine.prototype._onPacket = function (packet) {
    if (this.state !== 'open' || packet.length === 0) return;
    var type = packet.charAt(0);
    var data = packet.slice(1);
    switch (type) {
      case '1': // close
        this._onClose('transport close');
        break;
      case '2': // ping from the server
        this._resetPingTimer();
        this.send('3' + data);
        break;
      case '4': // message
        this._fire('message', data);
        break;
      default: // '0' open again, '3' pong, '6' noop, 'b' base64 binary: nothing to do
        break;
    }
  };

  // Queues one encoded Engine.IO packet (for example "42[...]") and flushes it.
  Engine.prototype.send = function (packet) {
    if (this.state !== 'open') return false;
    this.writeBuffer.push(packet);
    this._flush();
    return true;
  };

  Engine.prototype._flush = function () {
    if (this.state !== 'open' || this.writeBuffer.length === 0) return;
    var self = this;
    if (this.transport === 'websocket') {
      var packets = this.writeBuffer;
      this.writeBuffer = [];
      try {
        packets.forEach(function (p) { self.ws.send(p); });
      } catch (e) {
        this._onClose('transport error', e);
      }
      return;
    }
    if (this.writing || this.upgrading) return;
    var body = this.writeBuffer.join(SEP);
    this.writeBuffer = [];
    this.writing = true;
    var controller = new AbortController();
    this.postController = controller;
    var timer = setTimeout(function () { controller.abort(); }, this.timeout);
    fetch(this._url('polling', true), {
      method: 'POST',
      body: body,
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      cache: 'no-store',
      credentials: 'same-origin',
      signal: controller.signal
    })
      .then(function (res) {
        clearTimeout(timer);
        if (!res.ok) throw new Error('POST failed with HTTP ' + res.status);
        return res.text();
      })
      .then(function () {
        if (self.postController !== controller) return;
        self.postController = null;
        self.writing = false;
        self._maybeFinishUpgrade();
        self._flush();
      })
      .catch(function (err) {
        clearTimeout(timer);
        if (self.postController !== controller) return;
        self.postController = null;
        self.writing = false;
        self._onClose('transport error', err);
      });
  };

  Engine.prototype._poll = function () {
    if (this.state !== 'open' || this.transport !== 'polling' || this.polling || this.upgrading) return;
    var self = this;
    this.polling = true;
    var controller = new AbortController();
    this.pollController = controller;
    fetch(this._url('polling', true), { cache: 'no-store', credentials: 'same-origin', signal: controller.signal })
      .then(function (res) {
        if (!res.ok) throw new Error('poll failed with HTTP ' + res.status);
        return res.text();
      })
      .then(function (body) {
        if (self.pollController !== controller) return;
        self.pollController = null;
        self.polling = false;
        body.split(SEP).forEach(function (p) { self._onPacket(p); });
        if (self.state !== 'open') return;
        self._maybeFinishUpgrade();
        self._poll();
      })
      .catch(function (err) {
        if (self.pollController !== controller) return;
        self.pollController = null;
        self.polling = false;
        self._onClose('transport error', err);
      });
  };

  Engine.prototype._probe = function () {
    var self = this;
    var ws;
    try {
      ws = new root.WebSocket(this._url('websocket', true));
    } catch (e) {
      return; // stay on polling
    }
    ws.binaryType = 'arraybuffer';
    this.probeWs = ws;
    var abandon = function () {
      if (self.probeWs !== ws) return;
      self.probeWs = null;
      clearTimeout(self.upgradeTimer);
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(); } catch (e) { /* already closed */ }
      if (self.upgrading) {
        self.upgrading = false;
        self._poll();
        self._flush();
      }
    };
    ws.onopen = function () {
      ws.send('2probe');
    };
    ws.onmessage = function (ev) {
      if (ev.data === '3probe' && self.state === 'open' && !self.upgrading) {
        self.upgrading = true;
        // The server ends the pending GET (with a noop); give up after a while if not.
        self.upgradeTimer = setTimeout(abandon, 10000);
        self._maybeFinishUpgrade();
      } else {
        abandon();
      }
    };
    ws.onerror = abandon;
    ws.onclose = abandon;
  };

  Engine.prototype._maybeFinishUpgrade = function () {
    if (!this.upgrading || this.polling || this.writing || this.state !== 'open' || !this.probeWs) return;
    var self = this;
    var ws = this.probeWs;
    this.probeWs = null;
    this.upgrading = false;
    clearTimeout(this.upgradeTimer);
    try {
      ws.send('5');
    } catch (e) {
      this._onClose('transport error', e);
      return;
    }
    this.ws = ws;
    this.transport = 'websocket';
    ws.onopen = null;
    ws.onmessage = function (ev) {
      if (typeof ev.data === 'string') self._onPacket(ev.data);
    };
    ws.onerror = function () {
      self._onClose('transport error');
    };
    ws.onclose = function () {
      self._onClose('transport close');
    };
    this._fire('upgrade', 'websocket');
    this._flush();
  };

  // Closes the session on purpose (sends a close packet when polling).
  Engine.prototype.close = function () {
    if (this.state === 'closed') return;
    if (this.state === 'open') {
      if (this.transport === 'polling') {
        // Queued packets (for example a Socket.IO disconnect) go out with the close packet.
        var body = this.writeBuffer.concat(['1']).join(SEP);
        this.writeBuffer = [];
        try {
          fetch(this._url('polling', true), {
            method: 'POST',
            body: body,
            headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
            keepalive: true,
            credentials: 'same-origin'
          }).catch(function () { /* best effort */ });
        } catch (e) { /* best effort */ }
      } else if (this.transport === 'websocket' && this.ws) {
        // Make sure queued packets (for example a Socket.IO disconnect) leave first.
        this._flush();
      }
    }
    this._onClose('forced close');
  };

  // Drops the transport without any goodbye, as a broken network would.
  Engine.prototype.drop = function () {
    if (this.state === 'closed') return;
    if (this.ws) {
      try { this.ws.close(); } catch (e) { /* ignore */ }
    }
    this._onClose('transport close');
  };

  Engine.prototype._onClose = function (reason, err) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.pingTimer);
    clearTimeout(this.upgradeTimer);
    var controllers = [this.pollController, this.postController];
    this.pollController = this.postController = null;
    controllers.forEach(function (c) { if (c) c.abort(); });
    [this.ws, this.probeWs].forEach(function (ws) {
      if (!ws) return;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(); } catch (e) { /* ignore */ }
    });
    this.ws = this.probeWs = null;
    this.polling = this.writing = this.upgrading = false;
    this.writeBuffer = [];
    this._fire('close', reason, err);
  };

  // ---------------------------------------------------------------- Socket.IO v5 (namespace "/")

  function parseSocketPacket(str) {
    var type = str.charAt(0);
    if (!/^[0-6]$/.test(type)) return null;
    var i = 1;
    if (type === '5' || type === '6') {
      // binary event / ack: attachments are not supported by this client
      return { type: +type, unsupported: true };
    }
    var nsp = '/';
    if (str.charAt(i) === '/') {
      var comma = str.indexOf(',', i);
      if (comma === -1) {
        nsp = str.slice(i);
        i = str.length;
      } else {
        nsp = str.slice(i, comma);
        i = comma + 1;
      }
    }
    var idStart = i;
    while (i < str.length && str.charCodeAt(i) >= 48 && str.charCodeAt(i) <= 57) i++;
    var id = i > idStart ? parseInt(str.slice(idStart, i), 10) : null;
    var data;
    if (i < str.length) {
      try {
        data = JSON.parse(str.slice(i));
      } catch (e) {
        return null;
      }
    }
    return { type: +type, nsp: nsp, id: id, data: data };
  }

  function Socket(opts) {
    Emitter.call(this);
    this.opts = opts || {};
    this.id = null;
    this.connected = false;
    this.engine = null;
    this.acks = {};
    this.nextAckId = 0;
    this.reconnection = this.opts.reconnection !== false;
    this.delayMin = this.opts.reconnectionDelay || 1000;
    this.delayMax = this.opts.reconnectionDelayMax || 5000;
    this.jitter = typeof this.opts.randomizationFactor === 'number' ? this.opts.randomizationFactor : 0.5;
    this.attempts = 0;
    this.reconnectTimer = null;
    this.active = false;
  }
  inherit(Socket);

  Object.defineProperty(Socket.prototype, 'transport', {
    get: function () { return this.engine && this.engine.state === 'open' ? this.engine.transport : null; }
  });

  Socket.prototype.connect = function () {
    if (this.active) return this;
    this.active = true;
    this._open();
    return this;
  };

  Socket.prototype._open = function () {
    var self = this;
    var engine = new Engine(this.opts);
    this.engine = engine;
    engine.on('open', function () {
      if (self.engine !== engine) return;
      engine.send('40');
    });
    engine.on('message', function (data) {
      if (self.engine !== engine) return;
      self._onPacket(data);
    });
    engine.on('upgrade', function (name) {
      if (self.engine !== engine) return;
      self._fire('upgrade', name);
    });
    engine.on('close', function (reason, err) {
      if (self.engine !== engine) return;
      self.engine = null;
      self._onEngineClose(reason, err);
    });
    engine.open();
  };

  Socket.prototype._onPacket = function (str) {
    var p = parseSocketPacket(str);
    if (!p || p.unsupported || p.nsp !== '/') return;
    switch (p.type) {
      case 0: { // CONNECT
        this.id = p.data && typeof p.data.sid === 'string' ? p.data.sid : null;
        this.connected = true;
        var attempts = this.attempts;
        this.attempts = 0;
        this._fire('connect');
        if (attempts > 0) this._fire('reconnect', attempts);
        break;
      }
      case 1: // DISCONNECT by the server: final
        this.active = false;
        this._closeEngine();
        this._onEngineClose('io server disconnect');
        break;
      case 2: { // EVENT
        if (!Array.isArray(p.data) || p.data.length === 0 || typeof p.data[0] !== 'string') return;
        var args = p.data.slice(1);
        if (p.id !== null) args.push(this._ackFn(p.id));
        this._fire.apply(this, [p.data[0]].concat(args));
        break;
      }
      case 3: { // ACK
        var fn = this.acks[p.id];
        if (!fn) return;
        delete this.acks[p.id];
        try {
          fn.apply(null, Array.isArray(p.data) ? p.data : []);
        } catch (e) {
          if (root.console) root.console.error(e);
        }
        break;
      }
      case 4: { // CONNECT_ERROR: final, as in the reference client
        var err = new Error(p.data && p.data.message ? p.data.message : 'connect error');
        err.data = p.data && p.data.data;
        this.active = false;
        this._closeEngine();
        this._fire('connect_error', err);
        break;
      }
      default:
        break;
    }
  };

  Socket.prototype._ackFn = function (id) {
    var self = this;
    var engine = this.engine;
    var sent = false;
    return function () {
      if (sent) return;
      sent = true;
      if (!engine || self.engine !== engine) return;
      var args = Array.prototype.slice.call(arguments);
      engine.send('43' + id + JSON.stringify(args));
    };
  };

  Socket.prototype._closeEngine = function () {
    var engine = this.engine;
    this.engine = null;
    if (engine) engine.close();
  };

  Socket.prototype._onEngineClose = function (reason, err) {
    var wasConnected = this.connected;
    this.connected = false;
    this.id = null;
    this.acks = {}; // acks of a lost connection never arrive
    if (wasConnected) {
      this._fire('disconnect', reason);
    } else if (reason !== 'io server disconnect' && reason !== 'io client disconnect') {
      var e = err instanceof Error ? err : new Error(reason);
      this._fire('connect_error', e);
    }
    if (this.active && this.reconnection && reason !== 'io server disconnect' && reason !== 'io client disconnect') {
      this._scheduleReconnect();
    }
  };

  Socket.prototype._scheduleReconnect = function () {
    var self = this;
    if (this.reconnectTimer) return;
    this.attempts++;
    var delay = this.delayMin * Math.pow(2, Math.min(this.attempts - 1, 30));
    if (this.jitter) delay = delay * (1 + this.jitter * (2 * Math.random() - 1));
    delay = Math.max(0, Math.min(delay, this.delayMax));
    var attempt = this.attempts;
    this.reconnectTimer = setTimeout(function () {
      self.reconnectTimer = null;
      if (!self.active) return;
      self._fire('reconnect_attempt', attempt);
      self._open();
    }, delay);
  };

  // emit(event, ...args[, ack]): returns false (and sends nothing) while not connected.
  Socket.prototype.emit = function (event) {
    var args = Array.prototype.slice.call(arguments);
    var ack = null;
    if (args.length > 1 && typeof args[args.length - 1] === 'function') ack = args.pop();
    if (!this.connected || !this.engine) return false;
    var packet = '2';
    if (ack) {
      var id = this.nextAckId++;
      this.acks[id] = ack;
      packet += id;
    }
    packet += JSON.stringify(args);
    return this.engine.send('4' + packet);
  };

  Socket.prototype.disconnect = function () {
    this.active = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.engine) {
      if (this.connected) this.engine.send('41');
      this._closeEngine();
    }
    this._onEngineClose('io client disconnect');
    return this;
  };

  // Breaks the current connection as a network failure would (automatic reconnection follows).
  Socket.prototype.simulateConnectionLoss = function () {
    if (this.engine) this.engine.drop();
  };

  root.ChatIO = {
    connect: function (opts) {
      return new Socket(opts).connect();
    },
    Socket: Socket,
    Engine: Engine,
    parseSocketPacket: parseSocketPacket
  };
})(typeof window !== 'undefined' ? window : globalThis);
