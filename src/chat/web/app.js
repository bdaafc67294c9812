/*
 * The chat page: login form, room view, encrypted messages.
 * Needs /chat/crypto.js (window.ChatCrypto) and /chat/client.js (window.ChatIO) loaded first.
 *
 * Stable selectors (for tests and styling):
 *   #connection-status              text of the connection state; attribute data-state is
 *                                   "connecting" | "connected" | "disconnected"
 *   #login-view                     the login card (hidden while in a room)
 *   #login-form                     form with #login-name, #login-room, #login-password, #login-submit
 *   #login-error                    validation error or the server's error from the login ack
 *   #room-view                      the room (hidden while the login form shows)
 *   #room-name                      the current room's name
 *   #logout-button                  leaves the room (emits "logout" with an ack)
 *   #user-count                     number of people in the room
 *   #user-list > li.user            one per user, in the server's order; attributes data-user-id
 *                                   (socket id) and data-user-name; class "is-self" on your own
 *                                   entry, which also holds span.user-you with the text "(you)";
 *                                   the name itself is in span.user-name
 *   #messages                       the message stream (ol), in arrival order, holding:
 *     li.message.message-own        your own message (right), attribute data-from
 *     li.message.message-other      someone else's message (left), attribute data-from, with
 *                                   span.message-from holding the sender's name
 *       .message-text               the decrypted text; with class "unreadable" and the text
 *                                   "unreadable message" when it does not decrypt; the li then
 *                                   also has class "message-unreadable"
 *     li.notification               a server notification: .notification-title and
 *                                   .notification-description
 *     li.system-notice              a local notice (connection lost, reconnected)
 *   #message-form                   form with #message-input and #send-button
 *   #room-error                     send errors (not connected, too long)
 *
 * window.chatDebug.simulateConnectionLoss() breaks the current connection as a network
 * failure would; the page then reconnects and logs in again by itself.
 */
(function () {
  'use strict';

  var NAME_MAX = 20;
  var PASSWORD_MIN = 6;
  var PASSWORD_MAX = 50;
  var MESSAGE_WIRE_MAX = 16 * 1024; // the server drops longer roomMessage strings
  var ACK_TIMEOUT = 10000;
  var RELOGIN_RETRY_DELAY = 2000;
  var RELOGIN_MAX_TRIES = 30;

  function $(id) {
    return document.getElementById(id);
  }

  var el = {
    status: $('connection-status'),
    loginView: $('login-view'),
    loginForm: $('login-form'),
    loginName: $('login-name'),
    loginRoom: $('login-room'),
    loginPassword: $('login-password'),
    loginSubmit: $('login-submit'),
    loginError: $('login-error'),
    roomView: $('room-view'),
    roomName: $('room-name'),
    logoutButton: $('logout-button'),
    userCount: $('user-count'),
    userList: $('user-list'),
    messages: $('messages'),
    messageForm: $('message-form'),
    messageInput: $('message-input'),
    sendButton: $('send-button'),
    roomError: $('room-error')
  };

  var state = {
    phase: 'form', // 'form' | 'joining' | 'room'
    me: null, // { id, name, room } from the login ack
    name: '',
    room: '',
    password: '',
    users: [],
    reloginTimer: null,
    reloginTries: 0,
    reloginPending: false,
    everConnected: false
  };

  var socket = window.ChatIO.connect({ reconnectionDelay: 1000, reconnectionDelayMax: 5000 });

  // ------------------------------------------------------------ helpers

  function setStatus(kind, text) {
    el.status.setAttribute('data-state', kind);
    el.status.textContent = text;
  }

  function showError(node, text) {
    if (text) {
      node.textContent = text;
      node.hidden = false;
    } else {
      node.textContent = '';
      node.hidden = true;
    }
  }

  function withTimeout(fn, ms, onTimeout) {
    var done = false;
    var timer = setTimeout(function () {
      if (done) return;
      done = true;
      onTimeout();
    }, ms);
    return function () {
      if (done) return;
      done = true;
      clearTimeout(timer);
      fn.apply(null, arguments);
    };
  }

  function scrollToBottom() {
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  function appendToStream(li) {
    var nearBottom = el.messages.scrollHeight - el.messages.scrollTop - el.messages.clientHeight < 80;
    el.messages.appendChild(li);
    if (nearBottom || li.classList.contains('message-own')) scrollToBottom();
  }

  function updateControls() {
    var connected = socket.connected;
    el.loginSubmit.disabled = state.phase === 'joining';
    el.sendButton.disabled = !connected || state.phase !== 'room' || state.reloginPending;
  }

  // ------------------------------------------------------------ views

  function showLogin() {
    state.phase = 'form';
    state.me = null;
    state.users = [];
    state.password = '';
    state.reloginPending = false;
    clearTimeout(state.reloginTimer);
    el.roomView.hidden = true;
    el.loginView.hidden = false;
    el.messages.textContent = '';
    el.userList.textContent = '';
    el.loginPassword.value = '';
    showError(el.roomError, '');
    updateControls();
    el.loginName.focus();
  }

  function showRoom() {
    state.phase = 'room';
    el.loginView.hidden = true;
    el.roomView.hidden = false;
    el.roomName.textContent = state.room;
    el.messages.textContent = '';
    showError(el.loginError, '');
    showError(el.roomError, '');
    renderUsers();
    updateControls();
    el.messageInput.focus();
  }

  function renderUsers() {
    var myId = state.me ? state.me.id : null;
    el.userList.textContent = '';
    state.users.forEach(function (u) {
      if (!u || typeof u !== 'object') return;
      var li = document.createElement('li');
      li.className = 'user';
      li.setAttribute('data-user-id', String(u.id));
      li.setAttribute('data-user-name', String(u.name));
      var name = document.createElement('span');
      name.className = 'user-name';
      name.textContent = String(u.name);
      li.appendChild(name);
      if (myId !== null && u.id === myId) {
        li.classList.add('is-self');
        li.appendChild(document.createTextNode(' '));
        var you = document.createElement('span');
        you.className = 'user-you';
        you.textContent = '(you)';
        li.appendChild(you);
      }
      el.userList.appendChild(li);
    });
    el.userCount.textContent = String(el.userList.children.length);
  }

  function addMessage(payload) {
    if (!payload || typeof payload !== 'object') return;
    var from = typeof payload.from === 'string' ? payload.from : '';
    var own = state.me !== null && from === state.me.name;
    var text = typeof payload.message === 'string' ? window.ChatCrypto.decrypt(payload.message, state.password) : null;

    var li = document.createElement('li');
    li.className = 'message ' + (own ? 'message-own' : 'message-other');
    li.setAttribute('data-from', from);
    if (!own) {
      var who = document.createElement('span');
      who.className = 'message-from';
      who.textContent = from;
      li.appendChild(who);
    }
    var body = document.createElement('div');
    body.className = 'message-text';
    if (text === null) {
      body.classList.add('unreadable');
      body.textContent = window.ChatCrypto.UNREADABLE;
      li.classList.add('message-unreadable');
    } else {
      body.textContent = text;
    }
    li.appendChild(body);
    appendToStream(li);
  }

  function addNotification(n) {
    if (!n || typeof n !== 'object') return;
    var li = document.createElement('li');
    li.className = 'notification';
    var title = document.createElement('span');
    title.className = 'notification-title';
    title.textContent = typeof n.title === 'string' ? n.title : '';
    var desc = document.createElement('span');
    desc.className = 'notification-description';
    desc.textContent = typeof n.description === 'string' ? n.description : '';
    li.appendChild(title);
    li.appendChild(document.createTextNode(' '));
    li.appendChild(desc);
    appendToStream(li);
  }

  function addSystemNotice(text) {
    var li = document.createElement('li');
    li.className = 'system-notice';
    li.textContent = text;
    appendToStream(li);
  }

  // ------------------------------------------------------------ login / logout

  function validate(name, room, password) {
    if (name.length < 1 || name.length > NAME_MAX) return 'Name must be 1–' + NAME_MAX + ' characters';
    if (room.length < 1 || room.length > NAME_MAX) return 'Room must be 1–' + NAME_MAX + ' characters';
    if (password.length < PASSWORD_MIN || password.length > PASSWORD_MAX) {
      return 'Room password must be ' + PASSWORD_MIN + '–' + PASSWORD_MAX + ' characters';
    }
    return null;
  }

  el.loginForm.addEventListener('submit', function (ev) {
    ev.preventDefault();
    if (state.phase !== 'form') return;
    var name = el.loginName.value.trim();
    var room = el.loginRoom.value.trim();
    var password = el.loginPassword.value;
    var problem = validate(name, room, password);
    if (problem) {
      showError(el.loginError, problem);
      return;
    }
    if (!socket.connected) {
      showError(el.loginError, 'Not connected to the server yet, please try again in a moment');
      return;
    }
    showError(el.loginError, '');
    state.phase = 'joining';
    state.users = [];
    updateControls();
    var onAck = withTimeout(function (res) {
      if (state.phase !== 'joining') return;
      if (res && res.user && typeof res.user === 'object') {
        state.me = res.user;
        state.name = res.user.name;
        state.room = res.user.room;
        state.password = password;
        showRoom();
      } else {
        state.phase = 'form';
        updateControls();
        showError(el.loginError, res && typeof res.error === 'string' ? res.error : 'Login failed');
      }
    }, ACK_TIMEOUT, function () {
      if (state.phase !== 'joining') return;
      state.phase = 'form';
      updateControls();
      showError(el.loginError, 'The server did not answer, please try again');
    });
    if (!socket.emit('login', { name: name, room: room }, onAck)) {
      state.phase = 'form';
      updateControls();
      showError(el.loginError, 'Not connected to the server, please try again');
    }
  });

  el.logoutButton.addEventListener('click', function () {
    if (state.phase !== 'room') return;
    el.logoutButton.disabled = true;
    var finish = withTimeout(function () {
      el.logoutButton.disabled = false;
      showLogin();
    }, 3000, function () {
      el.logoutButton.disabled = false;
      showLogin();
    });
    if (!socket.emit('logout', finish)) finish();
  });

  // After a reconnection: log in again with the same name and room.
  function relogin() {
    if (state.phase !== 'room' || !socket.connected) return;
    state.reloginPending = true;
    updateControls();
    var onAck = withTimeout(function (res) {
      if (state.phase !== 'room') return;
      if (res && res.user && typeof res.user === 'object') {
        state.me = res.user;
        state.reloginPending = false;
        state.reloginTries = 0;
        renderUsers();
        updateControls();
        addSystemNotice('Reconnected');
        return;
      }
      var error = res && typeof res.error === 'string' ? res.error : 'Login failed';
      // The server may not have noticed the old connection's loss yet.
      if (error === 'Name is already taken in this room' && state.reloginTries < RELOGIN_MAX_TRIES) {
        retryRelogin();
        return;
      }
      showLogin();
      showError(el.loginError, error);
    }, ACK_TIMEOUT, retryRelogin);
    if (!socket.emit('login', { name: state.name, room: state.room }, onAck)) {
      // disconnected again: the next "connect" tries once more
    }
  }

  function retryRelogin() {
    clearTimeout(state.reloginTimer);
    state.reloginTries++;
    state.reloginTimer = setTimeout(relogin, RELOGIN_RETRY_DELAY);
  }

  // ------------------------------------------------------------ sending

  el.messageForm.addEventListener('submit', function (ev) {
    ev.preventDefault();
    if (state.phase !== 'room') return;
    var text = el.messageInput.value;
    if (text.trim() === '') return;
    var wire = window.ChatCrypto.encrypt(text, state.password);
    if (wire.length > MESSAGE_WIRE_MAX) {
      showError(el.roomError, 'This message is too long');
      return;
    }
    if (!socket.connected || state.reloginPending || !socket.emit('roomMessage', wire)) {
      showError(el.roomError, 'Not connected, the message was not sent');
      return;
    }
    showError(el.roomError, '');
    el.messageInput.value = '';
    el.messageInput.focus();
  });

  // ------------------------------------------------------------ server events

  socket.on('connect', function () {
    setStatus('connected', 'Connected');
    var reconnect = state.everConnected;
    state.everConnected = true;
    updateControls();
    if (reconnect && state.phase === 'room') {
      state.reloginTries = 0;
      relogin();
    }
  });

  socket.on('disconnect', function (reason) {
    if (reason === 'io server disconnect') {
      setStatus('disconnected', 'Disconnected by the server');
    } else {
      setStatus('disconnected', 'Connection lost, reconnecting…');
    }
    clearTimeout(state.reloginTimer);
    if (state.phase === 'joining') {
      state.phase = 'form';
      showError(el.loginError, 'Connection lost, please try again');
    }
    if (state.phase === 'room') {
      state.reloginPending = true;
      addSystemNotice('Connection lost, reconnecting…');
    }
    updateControls();
  });

  socket.on('reconnect_attempt', function () {
    setStatus('connecting', 'Reconnecting…');
  });

  socket.on('connect_error', function () {
    if (!socket.connected) setStatus('disconnected', 'Cannot reach the server, retrying…');
  });

  socket.on('users', function (list) {
    if (!Array.isArray(list)) return;
    state.users = list;
    if (state.phase === 'room') renderUsers();
  });

  socket.on('notification', function (n) {
    if (state.phase === 'room') addNotification(n);
  });

  socket.on('roomMessage', function (payload) {
    if (state.phase === 'room') addMessage(payload);
  });

  window.addEventListener('pagehide', function (ev) {
    if (!ev.persisted) socket.disconnect();
  });

  window.chatDebug = {
    socket: socket,
    simulateConnectionLoss: function () {
      socket.simulateConnectionLoss();
    }
  };

  updateControls();
})();
