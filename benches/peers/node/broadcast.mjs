// The minimal broadcast program: a client joins the room named in its handshake auth
// ({"room": "<name>"}); the event `bcast` with arguments (room, payload) sends event `msg`
// with payload to every member of room.
import { Server } from "socket.io";
import { httpServer, listen } from "./common.mjs";

const http = httpServer();
const io = new Server(http, { serveClient: false });

io.on("connection", (socket) => {
  const room = socket.handshake.auth && socket.handshake.auth.room;
  if (typeof room === "string") socket.join(room);
  socket.on("bcast", (target, payload) => {
    io.to(target).emit("msg", payload);
  });
});

listen(http);
