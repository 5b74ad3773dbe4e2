// Package clitest runs a binary's run function inside a test.
package clitest

import (
	"context"
	"testing"
	"time"
)

// Run starts run in the background, with a context that ends at the test's
// cleanup, and returns the two addresses it reports once it listens. At
// cleanup it waits for run to return and fails the test on an error.
func Run(t testing.TB, run func(ctx context.Context, ready chan<- [2]string) error) [2]string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case addrs := <-ready:
		return addrs
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("run returned before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("run was not ready within 30s")
	}
	return [2]string{}
}
