/**
 * The raw hooks of both netwall tables (node and gateway): what happens to a
 * packet before conntrack sees it. Both tables name the same two sets:
 * `wg_ports` (this host's WireGuard listen ports) and `tenant_nets` (every
 * tenant subnet it serves).
 *
 * WireGuard's outer packets skip conntrack: UDP to one of this host's
 * WireGuard ports and addressed to the host itself (`fib daddr type local`:
 * traffic routed through the host on those ports stays tracked), and UDP the
 * host sends from one. They need no state, conntrack would otherwise look
 * each one up on top of the packet it carries, and a flood at a WireGuard
 * port takes no room in the conntrack table. The filter chains never see
 * them as anything but `untracked`: they accept them by port.
 *
 * Packets from or to a tenant address that arrive anywhere but a netwall
 * interface (or loopback) are dropped here, before conntrack sees them.
 * Conntrack matches by addresses and ports only, not by interface: later, in
 * `forward`, such a packet would already have been matched to a mesh flow's
 * entry — so a forged packet from outside could mark a flow as replied, move
 * its TCP state (a blind reset), or, where `forward` accepts established
 * flows first, be let through as part of it.
 */

/**
 * `raw_prerouting` and `raw_output`. `inside`: the interface names (globs)
 * that carry tenant addresses; `drop`: the drop chain for a tenant address
 * seen anywhere else.
 */
export function rawChains(inside: readonly string[], drop: string): string[] {
  return [
    '\tchain raw_prerouting {',
    '\t\ttype filter hook prerouting priority raw; policy accept;',
    // Accepted (in this hook only) so WireGuard's packets skip the tests below; never when addressed
    // to a tenant address (the host's mesh address is local too), which the outside must not reach.
    '\t\tudp dport @wg_ports ip daddr != @tenant_nets fib daddr type local notrack accept',
    '\t\tmeta nfproto ipv6 udp dport @wg_ports fib daddr type local notrack accept',
    ...inside.map((i) => `\t\tiifname "${i}" accept`),
    '\t\tiif "lo" accept', // an index compare: lo exists from the namespace's start, always index 1 (a name test copies 16 bytes)
    `\t\tip daddr @tenant_nets goto ${drop}`,
    `\t\tip saddr @tenant_nets goto ${drop}`,
    '\t}',
    '\tchain raw_output {',
    '\t\ttype filter hook output priority raw; policy accept;',
    '\t\tudp sport @wg_ports notrack',
    '\t}',
  ];
}

/**
 * ICMP errors quoting a UDP packet this host sent from a WireGuard port (path
 * MTU: fragmentation needed / packet too big; unreachable; time exceeded;
 * parameter problem). Those packets are untracked, so conntrack does not find
 * the errors `related` and calls them `invalid`: without these rules a
 * restricted input would drop them, and path MTU discovery with them. The
 * quoted header is read by offset: an IPv4 header without options (version 4,
 * length 5 words — what the host sends) or an IPv6 header directly followed
 * by UDP, then the quoted UDP source port. Redirects and source quench, which
 * `related` used to let in too, are left to the invalid drop: WireGuard needs
 * neither (Linux ignores source quench). Place before the `invalid` drop.
 */
export function wireguardErrors(wgPorts: readonly number[]): string[] {
  if (wgPorts.length === 0) return [];
  const ports = `{ ${wgPorts.join(', ')} }`;
  const comment = 'comment "errors about our WireGuard packets"';
  return [
    `\t\ticmp type { destination-unreachable, time-exceeded, parameter-problem } @th,64,8 0x45 @th,136,8 17 @th,224,16 ${ports} accept ${comment}`,
    `\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } @th,112,8 17 @th,384,16 ${ports} accept ${comment}`,
  ];
}
