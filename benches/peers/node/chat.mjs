// The chat contract (login, logout, roomMessage, ping; notification and users to the room)
// on the npm socket.io server.
import { Server } from "socket.io";
import { httpServer, listen } from "./common.mjs";

const http = httpServer();
const io = new Server(http, { serveClient: false });

const users = new Map(); // socket id -> { id, name, room }, in insertion order

const ALNUM = /^[A-Za-z0-9]+$/;

function validate(payload) {
  if (!payload || typeof payload !== "object") return { error: "No room or name provided" };
  const { name, room } = payload;
  if (typeof name !== "string" || typeof room !== "string") return { error: "No room or name provided" };
  const n = name.trim();
  const r = room.trim();
  if (!n || !r) return { error: "No room or name provided" };
  if (!ALNUM.test(n) || !ALNUM.test(r)) return { error: "Name and room may only contain letters and digits" };
  if (n.length > 20 || r.length > 20) return { error: "Name and room must be at most 20 characters" };
  return { name: n, room: r };
}

// Members per room kept alongside, so a login does not scan every user of the server.
const rooms = new Map(); // room -> Map(socket id -> user)

function removeUser(socket) {
  const user = users.get(socket.id);
  if (!user) return;
  users.delete(socket.id);
  const members = rooms.get(user.room);
  members.delete(socket.id);
  if (members.size === 0) rooms.delete(user.room);
  socket.leave(user.room);
  io.to(user.room).emit("notification", { title: "Someone just left", description: `${user.name} just left the room` });
  io.to(user.room).emit("users", members ? [...members.values()] : []);
}

io.on("connection", (socket) => {
  socket.on("login", (payload, ack) => {
    if (typeof ack !== "function") return socket.disconnect();
    const v = validate(payload);
    if (v.error) return ack({ error: v.error });
    if (users.has(socket.id)) return ack({ error: "user already exists" });
    let members = rooms.get(v.room);
    if (!members) rooms.set(v.room, (members = new Map()));
    const lower = v.name.toLowerCase();
    for (const u of members.values()) {
      if (u.name.toLowerCase() === lower) return ack({ error: "Name is already taken in this room" });
    }
    const user = { id: socket.id, name: v.name, room: v.room };
    users.set(socket.id, user);
    members.set(socket.id, user);
    socket.join(v.room);
    socket.to(v.room).emit("notification", { title: "Someone's here", description: `${v.name} just entered the room` });
    io.to(v.room).emit("users", [...members.values()]);
    ack({ user });
  });
  socket.on("logout", (ack) => {
    if (typeof ack !== "function") return socket.disconnect();
    removeUser(socket);
    ack();
  });
  socket.on("roomMessage", (message) => {
    if (typeof message !== "string" || message.length > 16 * 1024) return;
    const user = users.get(socket.id);
    if (!user) return;
    io.to(user.room).emit("roomMessage", { message, from: user.name });
  });
  socket.on("ping", (ack) => {
    if (typeof ack !== "function") return socket.disconnect();
    ack(socket.id);
  });
  socket.on("disconnect", () => removeUser(socket));
});

listen(http);
