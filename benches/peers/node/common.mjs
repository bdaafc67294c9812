// What both programs share: an HTTP server answering GET / and the listening address.
import { createServer } from "node:http";

export function httpServer() {
  return createServer((req, res) => {
    if (req.method === "GET" && req.url === "/") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("up and running");
    } else {
      res.writeHead(404);
      res.end();
    }
  });
}

export function listen(server) {
  const port = Number(process.env.PORT || 3001);
  const host = process.env.HOST || "127.0.0.1";
  server.listen(port, host, () => console.log(`listening on ${host}:${port}`));
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", () => process.exit(0));
  process.on("SIGINT", stop);
}
