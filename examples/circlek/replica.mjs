// A replica of a Circle K service on the local-process compute target (src/runtime/local): seed 000's
// JVM instances are proprietary, so the example runs this small Node program in their place. It keeps
// the target's contract: it listens on $PORT, answers GET /healthz when ready, and reads its
// configuration version from $TENANTRY_CONFIG_FILE. To watch a scaling policy work, POST
// /load?cpu=1 makes it use a CPU core and POST /load?mib=N makes it hold N MiB of memory, until
// POST /load?cpu=0&mib=0 (run it with `node --expose-gc` to hand the memory back at once); GET / says
// who it is.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const config = process.env.TENANTRY_CONFIG_FILE
  ? JSON.parse(readFileSync(process.env.TENANTRY_CONFIG_FILE, 'utf8'))
  : null;
let busy = false;
let held = null;
function spin() {
  if (!busy) return;
  const end = Date.now() + 50;
  while (Date.now() < end) {}
  setImmediate(spin);
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://replica');
  if (url.pathname === '/healthz') return res.writeHead(200).end('ok');
  if (url.pathname === '/load' && req.method === 'POST') {
    const was = busy;
    busy = url.searchParams.get('cpu') === '1';
    if (busy && !was) spin();
    const mib = Number(url.searchParams.get('mib') ?? 0);
    // Filled, so that the pages are really resident.
    held = mib > 0 ? Buffer.alloc(mib * 1024 * 1024, 1) : null;
    if (!held) globalThis.gc?.();
    return res.writeHead(204).end();
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(
    JSON.stringify({
      replica: process.env.TENANTRY_REPLICA,
      pid: process.pid,
      service: process.env.TENANTRY_SERVICE,
      image: process.env.TENANTRY_IMAGE,
      version: process.env.TENANTRY_VERSION,
      configChecksum: process.env.TENANTRY_CONFIG_CHECKSUM ?? null,
      config,
      busy,
      heldMiB: held ? held.length / 1024 / 1024 : 0,
    }),
  );
});
server.listen(Number(process.env.PORT), '127.0.0.1', () =>
  process.stdout.write(
    `${process.env.TENANTRY_REPLICA} ${process.env.TENANTRY_VERSION} listening on ${process.env.PORT}\n`,
  ),
);
process.on('SIGTERM', () => process.exit(0));
// A replica whose Tenantry was killed (not stopped) ends with it; the next start would end it anyway.
const parent = process.ppid;
setInterval(() => process.ppid !== parent && process.exit(0), 1000).unref();
