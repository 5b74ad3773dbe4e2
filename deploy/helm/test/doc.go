// Package charttest proves the Helm chart in ../rtcedge without a cluster:
// it renders the chart with Helm (pinned in tools/go.mod) for the default
// values, every values file in ../examples and a few variations, decodes
// every rendered object strictly into its k8s.io/api type (an unknown,
// misspelled or duplicated field fails), and checks the objects against
// the real binaries: container ports and protocols against the listen
// flags, every RTCEDGE_* variable against the binaries' flag sets, probe
// paths by starting the binaries with the rendered environment (listeners
// on loopback port 0, a real embedded etcd) and calling them, and the
// relay's preStop command by running it against a relay with a session.
//
// It is a module of its own so that k8s.io dependencies stay out of the
// product's go.mod; `make chart-test` runs it.
package charttest
