package embedetcd

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtcedge/rtcedge/registry"
)

// StartForTest starts an embedded etcd for a test and closes it at cleanup;
// it fails the test when etcd does not start. It runs without fsync
// (Config.UnsafeNoFsync): Stop/Restart keep the data, and tests are not
// slowed down by a disk shared with other jobs.
func StartForTest(t testing.TB) *Server {
	t.Helper()
	s, err := Start(t.Context(), Config{UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var testPrefixes atomic.Int64

// NewClientForTest returns a registry client on s with a key prefix of its
// own, so tests sharing one etcd do not see each other's keys. It is closed
// at cleanup. tweak may change its configuration (a test that loads etcd
// on purpose gives its calls more time than the default 2 s).
func NewClientForTest(t testing.TB, s *Server, tweak ...func(*registry.Config)) *registry.Client {
	t.Helper()
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	cfg := registry.Config{
		Endpoints:      s.Endpoints(),
		Prefix:         fmt.Sprintf("/rtcedge-test/%s-%d/", name, testPrefixes.Add(1)),
		DialTimeout:    2 * time.Second,
		RequestTimeout: 2 * time.Second,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	c, err := registry.New(cfg)
	if err != nil {
		t.Fatalf("registry client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
