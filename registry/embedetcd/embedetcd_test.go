package embedetcd_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/rtcedge/rtcedge/registry/embedetcd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a slog.Handler keeping every record's message.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	r.msgs = append(r.msgs, line)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		if strings.HasPrefix(m, "ERROR") {
			out = append(out, m)
		}
	}
	return out
}

// TestStopRestart shows that Restart serves the same data on the same
// endpoint, and that stopping etcd logs no error.
func TestStopRestart(t *testing.T) {
	rec := &recorder{}
	srv, err := embedetcd.Start(t.Context(), embedetcd.Config{Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	eps := srv.Endpoints()
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "127.0.0.1:") {
		t.Fatalf("endpoints %v, want one loopback endpoint", eps)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = cli.Get(short, "k")
	cancelShort()
	if err == nil {
		t.Fatal("get succeeded while etcd was stopped")
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.Endpoints(); got[0] != eps[0] {
		t.Fatalf("endpoint after restart %v, want %v", got, eps)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v %v, want k=v", resp, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if errs := rec.errors(); len(errs) > 0 {
		t.Errorf("etcd logged errors during a clean stop/restart/close:\n%s", strings.Join(errs, "\n"))
	}
}
