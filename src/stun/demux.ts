/**
 * RFC 7983 §7 demultiplexing by the first byte of a datagram on a WebRTC 5-tuple. The proxy only
 * needs it to say *what* it dropped (counters by class); routing itself only ever looks at STUN.
 */
export const PacketClass = {
  Stun: 0, // [0..3]
  Zrtp: 1, // [16..19]
  Dtls: 2, // [20..63]
  TurnChannel: 3, // [64..79]
  RtpRtcp: 4, // [128..191]
  Other: 5,
} as const;
export type PacketClass = (typeof PacketClass)[keyof typeof PacketClass];

export function classifyFirstByte(b: number): PacketClass {
  if (b <= 3) return PacketClass.Stun;
  if (b >= 16 && b <= 19) return PacketClass.Zrtp;
  if (b >= 20 && b <= 63) return PacketClass.Dtls;
  if (b >= 64 && b <= 79) return PacketClass.TurnChannel;
  if (b >= 128 && b <= 191) return PacketClass.RtpRtcp;
  return PacketClass.Other;
}
