// Command pause holds a network namespace, as the pod sandbox ("pause")
// container of Kubernetes does: it owns a container's networks, addresses
// and published ports, and the processes that serve on them run in other
// containers that join its namespace (compose's network_mode
// "service:relay-N-net"). Those can then be stopped, restarted or replaced
// (deploy/compose/cluster.yml's gapless relay upgrade: a second relay
// process started beside the first, on the same ports, before the first
// stops) while the addresses and Docker's port proxies stay up: a container
// that owns its network takes seconds to restart and gets new proxies,
// whose clients are seen from a new source address.
//
// It does nothing but wait: it blocks until SIGTERM or SIGINT and exits 0.
// As PID 1 of its container it must catch them, since the kernel drops
// signals to PID 1 that it has no handler for. Stdlib only, built static
// (CGO_ENABLED=0) by `make images` into bin/pause and the image
// rtcedge/pause:dev.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
