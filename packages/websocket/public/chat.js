// The chat page of @vikdf/websocket: plain JavaScript, no build step. It speaks protocol 1
// (docs/websocket-protocol.md) with the server that served it, on one conversation. With the server's feature
// `resume`, the conversation's token is kept in sessionStorage: after a reconnect or a reload the page resumes
// it (the server still has the history) and says plainly when it could not, or when a reply was lost.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const messages = $('messages');
  const input = $('input');
  const sendButton = $('send');
  const stopButton = $('stop');
  const resetButton = $('reset');
  const authForm = $('auth');
  const conversation = 'default';
  const TOKEN_KEY = 'vikdf-chat:conversation';

  let ws = null; // the open (or opening) socket
  let ready = false; // hello received and authenticated
  let current = null; // the reply in progress: { id, el, text, textEl }
  let queued = null; // a message waiting for the connection
  let pendingToken = null; // a token to send once connected
  let hadSession = false; // a connection was ready before
  let canResume = false; // the server has feature "resume"
  let resumeId = null; // the id of the resume frame awaiting its answer
  let nextId = 1;

  // The conversation's token, kept for this tab (sessionStorage may be unavailable: then nothing is kept).
  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }
  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // not kept: a reload starts a new conversation
    }
  }

  function setStatus(text, kind) {
    const el = $('status');
    el.textContent = text;
    el.className = kind || '';
  }

  function note(text) {
    const el = document.createElement('div');
    el.className = 'note';
    el.textContent = text;
    messages.append(el);
    el.scrollIntoView({ block: 'end' });
  }

  function bubble(role, text) {
    const el = document.createElement('div');
    el.className = `msg ${role}`;
    const textEl = document.createElement('div');
    textEl.className = 'text';
    textEl.textContent = text;
    el.append(textEl);
    messages.append(el);
    el.scrollIntoView({ block: 'end' });
    return { el, textEl };
  }

  function meta(el, text) {
    const m = document.createElement('div');
    m.className = 'meta';
    m.textContent = text;
    el.append(m);
  }

  function updateButtons() {
    sendButton.disabled = current !== null;
    stopButton.disabled = current === null || !ready;
    resetButton.disabled = !ready;
  }

  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  function connect() {
    if (ws) return;
    ready = false;
    setStatus('connecting\u2026');
    const socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    ws = socket;
    socket.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      onFrame(frame);
    };
    socket.onclose = (event) => {
      if (ws !== socket) return;
      ws = null;
      ready = false;
      setStatus(`disconnected (${event.code}${event.reason ? `: ${event.reason}` : ''}); sending reconnects`, 'bad');
      resumeId = null;
      if (queued) {
        queued = null;
        if (current) finish(null, `not sent: the connection closed (${event.code})`);
      } else if (current) finish(null, `reply lost: the connection closed (${event.code}) before it finished`);
      updateButtons();
    };
  }

  /** Connected (and authenticated): resume the stored conversation first when there is one. */
  function becomeReady() {
    authForm.hidden = true;
    const token = canResume ? storedToken() : null;
    if (token) {
      resumeId = `p${nextId++}`;
      send({ type: 'resume', id: resumeId, conversation, token });
      setStatus('resuming\u2026');
      return; // ready once the server answers
    }
    if (hadSession && !canResume) note('Reconnected: the server has forgotten the earlier turns.');
    markReady();
  }

  function markReady() {
    ready = true;
    setStatus('connected', 'ok');
    hadSession = true;
    if (queued) {
      send(queued);
      queued = null;
    }
    updateButtons();
  }

  /** The answer to our resume frame. */
  function resumed(frame) {
    resumeId = null;
    const turns = Array.isArray(frame.history) ? frame.history : [];
    if (frame.resumed && !hadSession && !messages.querySelector('.msg')) {
      // A reload: show what the conversation holds.
      turns.forEach((text, i) => {
        const { el } = bubble(i % 2 === 0 ? 'user' : 'bot', text);
        if (i % 2 === 1) el.dataset.finish = 'restored';
      });
      note(`Conversation restored: the bot remembers these ${turns.length} turns.`);
    } else if (frame.resumed) {
      note(`Reconnected: the conversation goes on (the server kept its ${turns.length} turns).`);
    } else {
      note(
        'The earlier conversation could not be resumed: the server no longer has it (it restarted, or the ' +
          'conversation was kept too long without a connection). The bot has forgotten the earlier turns; this is a new conversation.',
      );
    }
    markReady();
  }

  function onFrame(frame) {
    switch (frame.type) {
      case 'hello': {
        const m = frame.model || {};
        $('model').textContent = m.name || 'unknown';
        $('model').title = `${m.llm || ''} LLM, ${m.textEncoder || ''} text encoder, ${(m.parameters || 0).toLocaleString()} parameters`;
        $('device').textContent = frame.device || 'unknown';
        if (frame.protocol !== 1) {
          setStatus(`unsupported protocol ${frame.protocol}`, 'bad');
          return;
        }
        const limits = frame.limits || {};
        if (limits.maxMessageChars) {
          input.placeholder = `Say something: up to about ${limits.maxMessageChars} characters (Enter sends, Shift+Enter for a new line)`;
        }
        canResume = Array.isArray(frame.features) && frame.features.includes('resume');
        if (canResume) send({ type: 'hello', protocol: 1, features: ['resume'] });
        if (frame.auth === 'required' && !frame.authenticated && pendingToken !== null) {
          send({ type: 'auth', id: `p${nextId++}`, token: pendingToken });
          pendingToken = null;
          setStatus('signing in\u2026');
        } else if (frame.auth === 'required' && !frame.authenticated) {
          setStatus('token needed', 'bad');
          authForm.hidden = false;
          $('token').focus();
        } else becomeReady();
        return;
      }
      case 'auth_ok':
        becomeReady();
        return;
      case 'token':
        if (current && frame.id === current.id) {
          current.el.classList.remove('waiting');
          current.text += frame.text;
          current.textEl.textContent = current.text;
          current.el.scrollIntoView({ block: 'end' });
        }
        return;
      case 'done':
        if (current && frame.id === current.id) finish(frame, null);
        return;
      case 'conversation':
        if (frame.conversation !== conversation) return;
        storeToken(frame.token);
        if (frame.id !== undefined && frame.id === resumeId) resumed(frame);
        return;
      case 'error':
        if (frame.code === 'conversation_moved' && frame.conversation === conversation) {
          storeToken(null);
          note('This conversation was resumed in another tab or window: it goes on there. A message here starts a new one.');
        } else if (frame.id !== undefined && frame.id === resumeId) {
          storeToken(null);
          note(`The earlier conversation could not be resumed (${frame.code}: ${frame.message}); this is a new conversation.`);
          resumeId = null;
          markReady();
        } else if (current && frame.id === current.id) finish(null, `${frame.code}: ${frame.message}`);
        else note(`error ${frame.code}: ${frame.message}`);
        return;
      case 'reset_ok':
        storeToken(null);
        messages.replaceChildren();
        note('Conversation reset.');
        return;
      default:
    }
  }

  function finish(done, error) {
    const c = current;
    current = null;
    c.el.classList.remove('waiting');
    if (done) {
      c.textEl.textContent = done.text;
      const t = done.timings || {};
      meta(c.el, `${done.usage.completionTokens} tokens \u00b7 ${Math.round(t.totalMs)} ms \u00b7 ${done.finishReason}`);
      c.el.dataset.finish = done.finishReason;
    } else {
      c.el.classList.add('error');
      meta(c.el, error);
      c.el.dataset.finish = 'error';
    }
    updateButtons();
    input.focus();
  }

  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || current) return;
    input.value = '';
    bubble('user', text);
    const { el, textEl } = bubble('bot', '');
    el.classList.add('waiting');
    const id = `p${nextId++}`;
    current = { id, el, textEl, text: '' };
    const frame = { type: 'message', id, conversation, text };
    if (ready) send(frame);
    else {
      queued = frame;
      connect();
    }
    updateButtons();
  });

  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });

  stopButton.addEventListener('click', () => {
    if (current) send({ type: 'cancel', id: current.id });
  });

  resetButton.addEventListener('click', () => send({ type: 'reset', id: `p${nextId++}`, conversation }));

  authForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value;
    $('token').value = '';
    if (ws && ws.readyState === WebSocket.OPEN) send({ type: 'auth', id: `p${nextId++}`, token });
    else {
      pendingToken = token;
      connect();
    }
  });

  updateButtons();
  connect();
})();
