// The payload echo program: the event `echo` is acknowledged with the same arguments, binary
// included. Limits are raised as in the other peers' echo programs: messages and polling bodies
// up to 32 MiB; no compression (permessage-deflate and polling's HTTP compression are off).
import { Server } from "socket.io";
import { httpServer, listen } from "./common.mjs";

const http = httpServer();
const io = new Server(http, {
  serveClient: false,
  maxHttpBufferSize: 32 * 1024 * 1024,
  perMessageDeflate: false,
  httpCompression: false,
});

io.on("connection", (socket) => {
  socket.on("echo", (...args) => {
    const ack = args.pop();
    if (typeof ack === "function") ack(...args);
  });
});

listen(http);
