import type dgram from 'node:dgram';

/**
 * SO_RCVBUF and SO_SNDBUF of a bound socket (`--socket-buffer`; 0 = the kernel's default), for the
 * public and the peer sockets alike. The kernel caps the size at net.core.rmem_max / wmem_max and
 * keeps twice what was asked (socket(7)); a refusal goes to `onError`, the socket stays usable.
 */
export function setSocketBuffers(sock: dgram.Socket, bytes: number, onError: (err: Error) => void): void {
  if (bytes <= 0) return;
  try {
    sock.setRecvBufferSize(bytes);
    sock.setSendBufferSize(bytes);
  } catch (err) {
    onError(err as Error);
  }
}
