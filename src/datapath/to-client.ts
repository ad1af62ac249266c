import type { Counters } from '../defs/counters.ts';
import type { Transport } from '../defs/interfaces.ts';
import type { ClientEndpoint } from '../session/session.ts';

/**
 * Sends a datagram for the client on `ep`: out of the public socket, or — while the client's flow
 * reaches this replica through a peer — back through that peer, which sends it from its public
 * port (docs/peers.md, "Owner"). Counted as `client_out` only when it leaves from here; the
 * tunnel counts its own (`ice_ingress_peer_tunnel_*`).
 */
export function sendToEndpoint(ep: ClientEndpoint, buf: Buffer, transport: Transport, c: Counters): void {
  const via = ep.via;
  if (via !== undefined) {
    via.send(buf);
    return;
  }
  c.packetsToClients++;
  c.bytesToClients += buf.length;
  transport.sendToClient(buf, ep.port, ep.address);
}
