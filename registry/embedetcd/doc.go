// Package embedetcd runs a single-member etcd server in-process, on loopback
// ports, for the all-in-one binary and for tests that need a real etcd. It
// is a separate package so the service binaries link the etcd server only
// when they use it.
//
// Start picks free loopback ports (unless given) and a temporary data
// directory (unless Config.Dir is set) and returns once etcd serves. Stop
// and Restart stop etcd and start it again on the same ports and directory,
// for tests of an etcd outage. etcd's own logs go to Config.Logger at error
// level only, without the harmless "mux: server closed" / "use of closed
// network connection" errors etcd logs whenever it stops.
//
// StartForTest and NewClientForTest are the test helpers: a server closed at
// the test's cleanup, and a registry.Client with a key prefix of its own per
// test (so tests can share one server), closed at cleanup.
package embedetcd
