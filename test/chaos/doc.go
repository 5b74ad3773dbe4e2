// Package chaos is the fault harness of the production topology
// (deploy/compose/cluster.yml: three etcd nodes, two signaling instances,
// three relays, two demo origins, each in its own container; each relay is a
// pod, its process in a container that joins the network namespace of a
// pause container holding its networks and published ports, so that fault
// 7 upgrades it by handover to a second relay process). TestChaos
// brings the stack up as a compose project of its own, runs steady load
// (pion publishers and players with sequence-numbered media, a constant rate
// of WHIP/WHEP setups and DELETEs), injects container-level faults one at a
// time with recovery in between, and prints and writes a JSON report per
// fault: setups by status code, packets lost per live session, times to
// recovery, orphaned resources and the invariants checked.
//
// It runs only when RTCEDGE_CHAOS is set (`make chaos`: full, every fault;
// `make chaos-short`: faults 1, 3 and 4), so `go test ./...` skips it. It
// needs Docker and the images of `make images`; its clients run on the host
// and reach the stack through ports published on 127.0.0.1 only.
package chaos
