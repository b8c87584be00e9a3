// Package dns is a discovery.Resolver that finds a service's endpoints in
// DNS, for users on Kubernetes (a headless service has one A or AAAA record
// per ready pod, and SRV records naming each pod and port) and anywhere
// else a DNS server lists a service's instances.
//
// The name a watch is given says what to look up:
//
//   - "name:port": the A and AAAA records of name; each address is an
//     endpoint at port. Example: "users.prod.svc.cluster.local:50051".
//   - "name": the same at Config.Port; Watch refuses such a name when
//     Config.Port is zero.
//   - "_service._proto.name" (a first label starting with an underscore, as
//     RFC 2782 spells SRV names): the SRV records of the name. Each record's
//     target is resolved to its addresses, from the answer's additional
//     section when the server gave them there, else by A and AAAA queries
//     to the same server; each address is an endpoint at the record's port,
//     weighted by the record's weight. Only the records of the lowest
//     priority are used: RFC 2782 makes the others backups. Example:
//     "_grpc._tcp.users.prod.svc.cluster.local".
//
// Names are asked as written, fully qualified: no search list applies, so
// write the whole name (Kubernetes' "users" becomes
// "users.prod.svc.cluster.local").
//
// The queries go straight to the servers of Config.Servers (else those of
// /etc/resolv.conf), over UDP and, when an answer is truncated, again over
// TCP, through github.com/miekg/dns. A name is looked up again every
// Config.Interval, shortened at random by up to Config.Jitter of it so that
// many clients do not ask together. All the watches of one name share one
// lookup loop, however many there are.
//
// A lookup that fails (no server answers within Config.Timeout, a server
// answers SERVFAIL or REFUSED, a truncated answer that TCP cannot fetch) is
// reported to the name's watchers (discovery.Watcher.Error, counted by a
// Router in ServiceStats.Errors), and the endpoints last delivered stay the
// best known: a DNS outage does not empty a service. An answer that the
// name does not exist (NXDOMAIN) or has no such records is no failure: the
// service has no endpoints then. A list is delivered only when it differs
// from the last one (same addresses, ports and weights, in any order, are
// no change); the Router drains the endpoints that leave it as it does for
// every resolver.
package dns
