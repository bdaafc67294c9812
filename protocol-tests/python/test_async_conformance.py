"""The conformance server (protocol-tests/node/README.md) driven by python-socketio's asyncio
client, socketio.AsyncClient (aiohttp for both transports; pinned in requirements.txt), over
polling, WebSocket, and polling upgraded to WebSocket. The server's address comes from SIO_URL.

    SIO_URL=http://127.0.0.1:3000 python -m unittest -v test_async_conformance.py
"""

import asyncio
import os
import unittest

import socketio

from conformance_settings import MODES, URL, WAIT, room_name


class Recorder:
    """Collects the arguments of every event a client receives, one queue per event name."""

    def __init__(self):
        self.queues = {}

    def queue(self, name):
        return self.queues.setdefault(name, asyncio.Queue())

    def handler(self, name):
        def record(*args):
            self.queue(name).put_nowait(args)

        return record

    async def next(self, name, timeout=WAIT):
        try:
            return await asyncio.wait_for(self.queue(name).get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {name!r} event within {timeout} s") from None

    async def none(self, name, within=0.3):
        await asyncio.sleep(within)
        self.assert_empty(name)

    def assert_empty(self, name):
        q = self.queue(name)
        assert q.empty(), f"unexpected {name!r}: {q.get_nowait()}"


async def next_item(q, what, timeout=WAIT):
    try:
        return await asyncio.wait_for(q.get(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no {what} within {timeout} s") from None


def tagged(tag, record):
    """A handler passing on to `record` only the events whose first argument is `tag`."""

    def handler(*args):
        if args and args[0] == tag:
            record(*args)

    return handler


class AsyncConformance:
    """The checks, run once per transport mode (see the subclasses below)."""

    transports = None

    async def asyncSetUp(self):
        if not URL:
            self.fail("SIO_URL is unset: start the conformance server and set it")
        self.clients = []

    async def asyncTearDown(self):
        for sio in self.clients:
            try:
                # Stops a reconnect in progress too.
                await asyncio.wait_for(sio.shutdown(), WAIT)
            except Exception:
                pass
            try:
                if sio.eio.state != "disconnected":
                    await asyncio.wait_for(sio.eio.disconnect(abort=True), WAIT)
            except Exception:
                pass
            http = sio.eio.http
            if http is not None and not http.closed:
                await http.close()

    def final_transport(self):
        return "polling" if self.transports == MODES["polling"] else "websocket"

    def new_client(self, reconnection=False):
        sio = socketio.AsyncClient(
            reconnection=reconnection, reconnection_delay=0.1, handle_sigint=False
        )
        self.clients.append(sio)
        return sio

    async def client(self, auth=None, namespaces=("/",), reconnection=False, events=()):
        sio = self.new_client(reconnection=reconnection)
        rec = Recorder()
        names = {"auth", "message-back", "ack-result", "room-message", "disconnect", "connect"}
        for name in names | set(events):
            for nsp in namespaces:
                sio.on(name, rec.handler(name if nsp == "/" else nsp + ":" + name), namespace=nsp)
        await sio.connect(
            URL,
            auth=auth,
            transports=self.transports,
            namespaces=list(namespaces),
            wait_timeout=WAIT,
        )
        return sio, rec

    # ---- connecting ------------------------------------------------------------------------

    async def test_auth_is_echoed_and_ids_are_distinct(self):
        sio, rec = await self.client(auth={"token": "py-async", "nested": [1, None, "x"]})
        self.assertEqual(await rec.next("auth"), ({"token": "py-async", "nested": [1, None, "x"]},))
        self.assertTrue(sio.connected)
        self.assertIsNotNone(sio.get_sid("/"))
        self.assertNotEqual(sio.get_sid("/"), sio.eio.sid)
        other, rec = await self.client()
        self.assertEqual(await rec.next("auth"), ({},))
        self.assertNotEqual(other.get_sid("/"), sio.get_sid("/"))
        self.assertNotEqual(other.eio.sid, sio.eio.sid)

    async def test_transport_in_use(self):
        sio, rec = await self.client()
        await rec.next("auth")
        # This client finishes the upgrade inside connect(), before the CONNECT packet leaves:
        # a refused or failed upgrade leaves it on polling.
        expected = self.final_transport()
        self.assertEqual(sio.transport(), expected)
        # Heartbeats (300 ms) keep an idle connection open; over WebSocket this client gives up
        # after pingInterval + pingTimeout (500 ms) without a packet.
        await asyncio.sleep(1.2)
        self.assertTrue(sio.connected)
        rec.assert_empty("disconnect")
        await sio.emit("message", "still here")
        self.assertEqual(await rec.next("message-back"), ("still here",))
        self.assertEqual(sio.transport(), expected)

    async def test_two_namespaces_over_one_connection(self):
        sio, rec = await self.client(auth={"k": 1}, namespaces=("/", "/custom"))
        self.assertEqual(await rec.next("auth"), ({"k": 1},))
        self.assertEqual(await rec.next("/custom:auth"), ({"k": 1},))
        self.assertIsNotNone(sio.get_sid("/custom"))
        self.assertNotEqual(sio.get_sid("/"), sio.get_sid("/custom"))
        self.assertNotEqual(sio.get_sid("/custom"), sio.eio.sid)

    async def test_server_disconnect_of_one_namespace_keeps_the_other(self):
        sio, rec = await self.client(namespaces=("/", "/custom"))
        await rec.next("auth")
        await rec.next("/custom:auth")
        await sio.emit("disconnect-me", namespace="/custom")
        self.assertEqual(await rec.next("/custom:disconnect"), (sio.reason.SERVER_DISCONNECT,))
        # The Engine.IO connection and `/` on it are untouched.
        self.assertTrue(sio.connected)
        self.assertEqual(sio.transport(), self.final_transport())
        await sio.emit("message", ("still on /", b"\x05"))
        self.assertEqual(await rec.next("message-back"), ("still on /", b"\x05"))
        rec.assert_empty("disconnect")

    async def test_unknown_namespace_is_refused(self):
        sio = self.new_client()
        errors = asyncio.Queue()
        sio.on("connect_error", lambda data: errors.put_nowait(data), namespace="/nope")
        with self.assertRaises(socketio.exceptions.ConnectionError) as refused:
            await sio.connect(
                URL, transports=self.transports, namespaces=["/nope"], wait_timeout=WAIT
            )
        # A refusal, not a timeout ("Unexpected connection error").
        self.assertIn("/nope", str(refused.exception))
        self.assertEqual(await next_item(errors, "connect_error"), {"message": "Invalid namespace"})
        self.assertFalse(sio.connected)

    async def test_middleware_refusal_carries_message_and_data(self):
        sio = self.new_client()
        rec = Recorder()
        sio.on("auth", rec.handler("auth"))
        errors = asyncio.Queue()
        sio.on("connect_error", lambda data: errors.put_nowait(data))
        with self.assertRaises(socketio.exceptions.ConnectionError):
            await sio.connect(
                URL, auth={"refuse": True}, transports=self.transports, wait_timeout=WAIT
            )
        self.assertEqual(
            await next_item(errors, "connect_error"),
            {"message": "refused by middleware", "data": {"reason": "test"}},
        )
        # An `auth` event would have come before the refusal.
        rec.assert_empty("auth")
        self.assertFalse(sio.connected)
        # Any other auth is let in.
        _, rec = await self.client(auth={"refuse": False})
        self.assertEqual(await rec.next("auth"), ({"refuse": False},))

    # ---- events and acks ---------------------------------------------------------------------

    async def test_values_round_trip(self):
        sio, rec = await self.client()
        await rec.next("auth")
        args = (1, "two", {"three": [3, 4.5]}, None, True, "ünïcødé ✓ 😀", [])
        await sio.emit("message", args)
        self.assertEqual(await rec.next("message-back"), args)
        await sio.emit("message", "single")
        self.assertEqual(await rec.next("message-back"), ("single",))
        await sio.emit("message")
        self.assertEqual(await rec.next("message-back"), ())

    async def test_binary_round_trips_at_any_depth(self):
        sio, rec = await self.client()
        await rec.next("auth")
        blob = bytes(range(256))
        args = (b"\x00\x01\x02", {"nested": [blob, {"deeper": b""}]}, "text")
        await sio.emit("message", args)
        self.assertEqual(await rec.next("message-back"), args)
        big = os.urandom(200_000)
        await sio.emit("message", (big,))
        self.assertEqual(await rec.next("message-back"), (big,))
        # Text after binary: the attachments were all consumed.
        await sio.emit("message", ("after", [b"\x10", b"\x11"]))
        self.assertEqual(await rec.next("message-back"), ("after", [b"\x10", b"\x11"]))

    async def test_acks_from_the_server(self):
        sio, rec = await self.client()
        await rec.next("auth")
        self.assertEqual(
            await sio.call("message-with-ack", ("a", 2, b"\xff"), timeout=WAIT), ("a", 2, b"\xff")
        )
        self.assertEqual(await sio.call("message-with-ack", "only", timeout=WAIT), "only")
        self.assertEqual(
            await sio.call("message-with-ack", {"n": [b"\x00", {"m": b"\x01"}]}, timeout=WAIT),
            {"n": [b"\x00", {"m": b"\x01"}]},
        )
        # Zero arguments give an ack with zero arguments.
        answers = asyncio.Queue()
        await sio.emit("message-with-ack", callback=lambda *a: answers.put_nowait(a))
        self.assertEqual(await next_item(answers, "ack"), ())
        # Ten in flight at once, each answered with its own arguments; a coroutine callback.

        async def collect(*a):
            answers.put_nowait(a)

        for i in range(10):
            await sio.emit("message-with-ack", (i,), callback=collect)
        got = sorted([await next_item(answers, "ack") for _ in range(10)])
        self.assertEqual(got, [(i,) for i in range(10)])

    async def test_binary_acks_in_flight(self):
        sio, rec = await self.client()
        await rec.next("auth")
        answers = asyncio.Queue()
        # Ten binary acks are thirty Engine.IO packets, which a poll may well find queued; this
        # client refuses an answer of more than 16 (Payload.max_decode_packets), so the server
        # hands them out 16 at a time.
        for i in range(10):
            await sio.emit(
                "message-with-ack",
                (i, bytes([i]), {"b": [bytes([i, i])]}),
                callback=lambda *a: answers.put_nowait(a),
            )
        got = sorted([await next_item(answers, "ack") for _ in range(10)])
        self.assertEqual(got, [(i, bytes([i]), {"b": [bytes([i, i])]}) for i in range(10)])
        self.assertTrue(sio.connected)

    async def test_acks_from_the_client(self):
        sio, rec = await self.client(events=("ack-request",))
        await rec.next("auth")
        asked = asyncio.Queue()

        @sio.on("ack-request")
        def answer(*args):
            asked.put_nowait(args)
            return ("got", len(args), b"\x01\x02")

        await sio.emit("request-ack", ("q", b"\x09"))
        self.assertEqual(await next_item(asked, "ack-request"), ("q", b"\x09"))
        self.assertEqual(await rec.next("ack-result"), ("got", 2, b"\x01\x02"))

        # A coroutine handler's return value is the ack too.
        @sio.on("ack-request")
        async def answer_later(*args):
            await asyncio.sleep(0)
            asked.put_nowait(args)
            return {"echo": list(args), "bin": [b"\xfe"]}

        await sio.emit("request-ack", ({"deep": b"\x0a"},))
        self.assertEqual(await next_item(asked, "ack-request"), ({"deep": b"\x0a"},))
        self.assertEqual(
            await rec.next("ack-result"), ({"echo": [{"deep": b"\x0a"}], "bin": [b"\xfe"]},)
        )

    # ---- rooms -------------------------------------------------------------------------------

    async def test_rooms(self):
        room = room_name("py-async-")
        a, ra = await self.client()
        b, rb = await self.client()
        c, rc = await self.client()
        for sio, r in ((a, ra), (b, rb), (c, rc)):
            await r.next("auth")
            # except-room reaches every socket outside the room, those of other runs against
            # the same server too: record only this test's messages (tagged with its room).
            sio.on("room-message", tagged(room, r.handler("room-message")))
        self.assertIs(await a.call("join", room, timeout=WAIT), True)
        self.assertIs(await b.call("join", room, timeout=WAIT), True)
        # to-room: the room but not the sender.
        await a.emit("to-room", (room, room, "hello", b"\x07"))
        self.assertEqual(await rb.next("room-message"), (room, "hello", b"\x07"))
        await ra.none("room-message")
        rc.assert_empty("room-message")
        # to-room-all: the sender too.
        await c.emit("to-room-all", (room, room, "all"))
        self.assertEqual(await ra.next("room-message"), (room, "all"))
        self.assertEqual(await rb.next("room-message"), (room, "all"))
        await rc.none("room-message")
        # except-room: everybody else, c among them (other tests' clients may get it too).
        await a.emit("except-room", (room, room, "outside"))
        self.assertEqual(await rc.next("room-message"), (room, "outside"))
        await ra.none("room-message")
        rb.assert_empty("room-message")
        # leave: no more deliveries.
        self.assertIs(await b.call("leave", room, timeout=WAIT), True)
        await c.emit("to-room-all", (room, room, "after"))
        self.assertEqual(await ra.next("room-message"), (room, "after"))
        await rb.none("room-message")
        # join without an ack: it takes effect before the socket's next event is handled (as
        # with the reference server), so the ack of that next event says it is done.
        await c.emit("join", room)
        self.assertEqual(await c.call("message-with-ack", "barrier", timeout=WAIT), "barrier")
        await a.emit("to-room", (room, room, "joined"))
        self.assertEqual(await rc.next("room-message"), (room, "joined"))
        await rb.none("room-message")

    async def test_many_clients_at_once(self):
        # Connected concurrently; each gets its own auth and only its own messages back.
        pairs = await asyncio.gather(*(self.client(auth={"i": i}) for i in range(8)))
        for i, (_, rec) in enumerate(pairs):
            self.assertEqual(await rec.next("auth"), ({"i": i},))
        await asyncio.gather(
            *(sio.emit("message", (i, bytes([i]) * 3)) for i, (sio, _) in enumerate(pairs))
        )
        for i, (_, rec) in enumerate(pairs):
            self.assertEqual(await rec.next("message-back"), (i, bytes([i]) * 3))
        for _, rec in pairs:
            rec.assert_empty("message-back")
        self.assertEqual(len({sio.get_sid("/") for sio, _ in pairs}), len(pairs))

    # ---- endings -----------------------------------------------------------------------------

    async def test_server_disconnect(self):
        sio, rec = await self.client(reconnection=True)
        await rec.next("auth")
        await sio.emit("disconnect-me")
        self.assertEqual(await rec.next("disconnect"), (sio.reason.SERVER_DISCONNECT,))
        # wait() returns once the connection has ended and no reconnect is under way.
        await asyncio.wait_for(sio.wait(), WAIT)
        self.assertFalse(sio.connected)
        rec.assert_empty("auth")

    async def test_transport_close_and_reconnect(self):
        sio, rec = await self.client(reconnection=True)
        await rec.next("connect")
        await rec.next("auth")
        first = sio.get_sid("/")
        first_engine = sio.eio.sid
        await sio.emit("close-transport")
        if self.transports == MODES["polling"]:
            # The close packet `1` in a poll: this client takes it for the server's decision and
            # does not reconnect (against the reference server too).
            self.assertEqual(await rec.next("disconnect"), (sio.reason.SERVER_DISCONNECT,))
            await asyncio.wait_for(sio.wait(), WAIT)
            self.assertFalse(sio.connected)
            rec.assert_empty("auth")
            return
        # A closed WebSocket: this client reports every end of its transport as an error.
        self.assertEqual(await rec.next("disconnect"), (sio.reason.TRANSPORT_ERROR,))
        await rec.next("connect", timeout=5)
        self.assertEqual(await rec.next("auth", timeout=5), ({},))
        self.assertNotEqual(sio.get_sid("/"), first)
        self.assertNotEqual(sio.eio.sid, first_engine)
        self.assertEqual(sio.transport(), "websocket")
        await sio.emit("message", ("back again", b"\x00"))
        self.assertEqual(await rec.next("message-back"), ("back again", b"\x00"))


class AsyncPolling(AsyncConformance, unittest.IsolatedAsyncioTestCase):
    transports = MODES["polling"]


class AsyncWebSocket(AsyncConformance, unittest.IsolatedAsyncioTestCase):
    transports = MODES["websocket"]


class AsyncDefault(AsyncConformance, unittest.IsolatedAsyncioTestCase):
    transports = MODES["default"]


if __name__ == "__main__":
    unittest.main()
