package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runInOwnNetns re-executes the test binary to run the top-level test name
// in a new network namespace (CLONE_NEWNET) with env added, relays its
// output, and passes, skips or fails as the child did. The child gets a
// process group of its own, so a timeout kills everything it started
// (browsers included; the namespace lives as long as any of them), and
// Pdeathsig covers the parent dying (the forking thread stays locked until
// Wait so it cannot exit and fire it early).
func runInOwnNetns(t *testing.T, name string, timeout time.Duration, env ...string) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1",
		"-test.timeout="+(timeout-10*time.Second).String())
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		t.Fatalf("re-executing the test in a new network namespace: %v", err)
	}
	pgid := cmd.Process.Pid
	var passed, skipped bool
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		trimmed := strings.TrimSpace(l)
		passed = passed || strings.HasPrefix(trimmed, "--- PASS: "+name)
		skipped = skipped || strings.HasPrefix(trimmed, "--- SKIP: "+name)
		t.Log("netns| " + l)
	}
	err = cmd.Wait()
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // anything left of the group goes with it
	t.Logf("child ran %s", time.Since(start).Round(time.Second))
	switch {
	case ctx.Err() != nil:
		t.Fatalf("the namespaced test did not finish in time: %v", err)
	case skipped && err == nil:
		t.Skip("skipped inside the namespace (see above)")
	case err != nil || !passed:
		t.Fatalf("the namespaced test failed (%v); its output is above", err)
	}
}
