/**
 * The program behind QEMU's `guestfwd=tcp:ADDR:PORT-cmd:...`: slirp starts one per guest TCP
 * connection with that connection as its stdin, stdout and stderr, and this joins it to a service
 * on the host's 127.0.0.1. One process per connection is what lets a boot make many connections
 * (iPXE's GETs, the agent's WebSocket, its image download) where a chardev forward takes only one.
 *
 * Usage: node qemu-relay.js PORT [TAG]. TAG is never read: it marks the process so that the
 * harness can find and end the relays of its own VM (slirp starts them in their own session).
 *
 * Nothing may be written to stdout or stderr except the relayed bytes: both are the guest's socket.
 */
import net from 'node:net';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) process.exit(2);

// fd 0 is a socket shared with fd 1; one duplex over it keeps reads and writes non-blocking, where
// process.stdout would write synchronously and stall the reads behind a slow guest.
const guest = new net.Socket({ fd: 0, readable: true, writable: true, allowHalfOpen: true });
const upstream = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
upstream.setNoDelay(true);

let closed = 0;
const onClose = (): void => {
  closed += 1;
  if (closed === 2) process.exit(0);
};
const fail = (): void => {
  guest.destroy();
  upstream.destroy();
};

guest.on('error', fail).on('close', onClose);
upstream.on('error', fail).on('close', onClose);
guest.pipe(upstream);
upstream.pipe(guest);

// A peer that half-closes and then goes silent must not keep the process alive for ever: once
// one direction has ended, the other gets a grace period to drain.
const GRACE_MS = 30_000;
const endSoon = (): void => {
  setTimeout(fail, GRACE_MS).unref();
};
guest.once('end', endSoon);
upstream.once('end', endSoon);
