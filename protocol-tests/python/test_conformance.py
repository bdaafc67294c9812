"""The conformance server (protocol-tests/node/README.md) driven by the Python client,
python-socketio (pinned in requirements.txt), over polling, WebSocket, and polling upgraded to
WebSocket. The server's address comes from SIO_URL.

    SIO_URL=http://127.0.0.1:3000 python -m unittest -v test_conformance.py
"""

import os
import queue
import threading
import time
import unittest

import socketio

from conformance_settings import MODES, URL, WAIT, room_name


class Recorder:
    """Collects the arguments of every event a client receives, one queue per event name."""

    def __init__(self):
        self.queues = {}
        self.lock = threading.Lock()

    def queue(self, name):
        with self.lock:
            return self.queues.setdefault(name, queue.Queue())

    def handler(self, name):
        def record(*args):
            self.queue(name).put(args)

        return record

    def next(self, name, timeout=WAIT):
        try:
            return self.queue(name).get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {name!r} event within {timeout} s") from None

    def none(self, name, within=0.3):
        time.sleep(within)
        self.assert_empty(name)

    def assert_empty(self, name):
        q = self.queue(name)
        assert q.empty(), f"unexpected {name!r}: {q.get_nowait()}"


class Conformance:
    """The checks, run once per transport mode (see the subclasses below)."""

    transports = None

    def setUp(self):
        if not URL:
            self.fail("SIO_URL is unset: start the conformance server and set it")
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            try:
                client.disconnect()
            except Exception:
                pass

    def client(self, auth=None, namespaces=("/",), reconnection=False, events=()):
        sio = socketio.Client(reconnection=reconnection, reconnection_delay=0.1)
        rec = Recorder()
        names = {"auth", "message-back", "ack-result", "room-message", "disconnect", "connect"}
        for name in names | set(events):
            for nsp in namespaces:
                sio.on(name, rec.handler(name if nsp == "/" else nsp + ":" + name), namespace=nsp)
        self.clients.append(sio)
        sio.connect(
            URL,
            auth=auth,
            transports=self.transports,
            namespaces=list(namespaces),
            wait_timeout=WAIT,
        )
        return sio, rec

    # ---- connecting ------------------------------------------------------------------------

    def test_auth_is_echoed_and_ids_are_distinct(self):
        sio, rec = self.client(auth={"token": "py", "nested": [1, None, "x"]})
        self.assertEqual(rec.next("auth"), ({"token": "py", "nested": [1, None, "x"]},))
        self.assertNotEqual(sio.get_sid("/"), sio.eio.sid)
        _, rec = self.client()
        self.assertEqual(rec.next("auth"), ({},))

    def test_transport_in_use(self):
        sio, rec = self.client()
        rec.next("auth")
        if self.transports == ["polling"]:
            expected = "polling"
        else:
            expected = "websocket"
            deadline = time.monotonic() + WAIT
            while sio.transport() != expected and time.monotonic() < deadline:
                time.sleep(0.05)
        self.assertEqual(sio.transport(), expected)
        # Heartbeats (300 ms) keep an idle connection open.
        time.sleep(1.2)
        self.assertTrue(sio.connected)
        rec.assert_empty("disconnect")

    def test_two_namespaces_over_one_connection(self):
        sio, rec = self.client(auth={"k": 1}, namespaces=("/", "/custom"))
        self.assertEqual(rec.next("auth"), ({"k": 1},))
        self.assertEqual(rec.next("/custom:auth"), ({"k": 1},))
        self.assertNotEqual(sio.get_sid("/"), sio.get_sid("/custom"))

    def test_unknown_namespace_is_refused(self):
        sio = socketio.Client(reconnection=False)
        self.clients.append(sio)
        errors = queue.Queue()
        sio.on("connect_error", lambda data: errors.put(data), namespace="/nope")
        with self.assertRaises(socketio.exceptions.ConnectionError):
            sio.connect(URL, transports=self.transports, namespaces=["/nope"], wait_timeout=WAIT)
        self.assertEqual(errors.get(timeout=WAIT), {"message": "Invalid namespace"})

    def test_middleware_refusal_carries_message_and_data(self):
        sio = socketio.Client(reconnection=False)
        self.clients.append(sio)
        errors = queue.Queue()
        sio.on("connect_error", lambda data: errors.put(data))
        with self.assertRaises(socketio.exceptions.ConnectionError):
            sio.connect(URL, auth={"refuse": True}, transports=self.transports, wait_timeout=WAIT)
        self.assertEqual(
            errors.get(timeout=WAIT),
            {"message": "refused by middleware", "data": {"reason": "test"}},
        )

    # ---- events and acks ---------------------------------------------------------------------

    def test_values_round_trip(self):
        sio, rec = self.client()
        rec.next("auth")
        args = (1, "two", {"three": [3, 4.5]}, None, True, "ünïcødé ✓ 😀", [])
        sio.emit("message", args)
        self.assertEqual(rec.next("message-back"), args)
        sio.emit("message", "single")
        self.assertEqual(rec.next("message-back"), ("single",))

    def test_binary_round_trips_at_any_depth(self):
        sio, rec = self.client()
        rec.next("auth")
        blob = bytes(range(256))
        args = (b"\x00\x01\x02", {"nested": [blob, {"deeper": b""}]}, "text")
        sio.emit("message", args)
        self.assertEqual(rec.next("message-back"), args)
        big = os.urandom(200_000)
        sio.emit("message", (big,))
        self.assertEqual(rec.next("message-back"), (big,))

    def test_acks_from_the_server(self):
        sio, rec = self.client()
        rec.next("auth")
        self.assertEqual(sio.call("message-with-ack", ("a", 2, b"\xff"), timeout=WAIT), ("a", 2, b"\xff"))
        self.assertEqual(sio.call("message-with-ack", "only", timeout=WAIT), "only")
        # Ten in flight at once, each answered with its own arguments.
        answers = queue.Queue()
        for i in range(10):
            sio.emit("message-with-ack", (i,), callback=lambda *a: answers.put(a))
        got = sorted(answers.get(timeout=WAIT) for _ in range(10))
        self.assertEqual(got, [(i,) for i in range(10)])

    def test_acks_from_the_client(self):
        sio, rec = self.client(events=("ack-request",))
        rec.next("auth")

        @sio.on("ack-request")
        def answer(*args):
            return ("got", len(args), b"\x01\x02")

        sio.emit("request-ack", ("q", b"\x09"))
        self.assertEqual(rec.next("ack-result"), ("got", 2, b"\x01\x02"))

    # ---- rooms -------------------------------------------------------------------------------

    def test_rooms(self):
        room = room_name("py-")
        a, ra = self.client()
        b, rb = self.client()
        c, rc = self.client()
        for r in (ra, rb, rc):
            r.next("auth")
        self.assertIs(a.call("join", room, timeout=WAIT), True)
        self.assertIs(b.call("join", room, timeout=WAIT), True)
        # to-room: the room but not the sender.
        a.emit("to-room", (room, "hello", b"\x07"))
        self.assertEqual(rb.next("room-message"), ("hello", b"\x07"))
        ra.none("room-message")
        rc.assert_empty("room-message")
        # to-room-all: the sender too.
        c.emit("to-room-all", (room, "all"))
        self.assertEqual(ra.next("room-message"), ("all",))
        self.assertEqual(rb.next("room-message"), ("all",))
        rc.none("room-message")
        # except-room: everybody else, c among them (other tests' clients may get it too).
        a.emit("except-room", (room, "outside"))
        self.assertEqual(rc.next("room-message"), ("outside",))
        ra.none("room-message")
        rb.assert_empty("room-message")
        # leave: no more deliveries.
        self.assertIs(b.call("leave", room, timeout=WAIT), True)
        c.emit("to-room-all", (room, "after"))
        self.assertEqual(ra.next("room-message"), ("after",))
        rb.none("room-message")

    # ---- endings -----------------------------------------------------------------------------

    def test_server_disconnect(self):
        sio, rec = self.client()
        rec.next("auth")
        sio.emit("disconnect-me")
        reason = rec.next("disconnect")
        self.assertEqual(reason, (sio.reason.SERVER_DISCONNECT,))
        time.sleep(0.5)
        self.assertFalse(sio.connected)

    def test_transport_close_and_reconnect(self):
        sio, rec = self.client(reconnection=True)
        rec.next("auth")
        first = sio.get_sid("/")
        sio.emit("close-transport")
        if self.transports == ["polling"]:
            # The close packet `1` in a poll: this client takes it for the server's decision and
            # does not reconnect (against the reference server too).
            self.assertEqual(rec.next("disconnect"), (sio.reason.SERVER_DISCONNECT,))
            return
        # A closed WebSocket: this client reports every end of its transport as an error.
        self.assertEqual(rec.next("disconnect"), (sio.reason.TRANSPORT_ERROR,))
        self.assertEqual(rec.next("auth", timeout=5), ({},))
        deadline = time.monotonic() + WAIT
        while not sio.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertNotEqual(sio.get_sid("/"), first)
        sio.emit("message", ("back again",))
        self.assertEqual(rec.next("message-back"), ("back again",))


class Polling(Conformance, unittest.TestCase):
    transports = MODES["polling"]


class WebSocket(Conformance, unittest.TestCase):
    transports = MODES["websocket"]


class Default(Conformance, unittest.TestCase):
    transports = MODES["default"]


if __name__ == "__main__":
    unittest.main()
