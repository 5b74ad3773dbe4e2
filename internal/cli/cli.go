// Package cli holds what every rtcedge binary's main shares: flags with
// RTCEDGE_* environment fallbacks, and the `healthcheck` subcommand that
// container health checks run (the images have no shell and no curl).
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// EnvName returns the environment variable that backs a flag: "udp-listen"
// becomes "RTCEDGE_UDP_LISTEN".
func EnvName(flagName string) string {
	return "RTCEDGE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs. A flag not given on the command line takes its
// value from its RTCEDGE_* environment variable when that is set, so the
// order of precedence is flag, then environment, then default. Every flag's
// usage gains the name of its variable. An environment value that does not
// parse is an error naming the variable.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	fs.VisitAll(func(f *flag.Flag) {
		f.Usage = fmt.Sprintf("%s (env %s)", f.Usage, EnvName(f.Name))
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v := getenv(EnvName(f.Name))
		if v == "" {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e)
		}
	})
	return err
}

// StringList is a flag.Value for a repeatable, comma-separated list.
type StringList []string

// String implements flag.Value.
func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value: each call appends the comma-separated items.
func (l *StringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// Healthcheck GETs url and returns nil on a 2xx answer within timeout. The
// binaries run it as `<binary> healthcheck <url>` from container health
// checks.
func Healthcheck(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("healthcheck: %s answered %s", url, resp.Status)
	}
	return nil
}

// RunHealthcheck handles `healthcheck <url>` when args starts with it: it
// reports whether it did, and the exit code to use.
func RunHealthcheck(ctx context.Context, args []string, stderr io.Writer) (handled bool, code int) {
	if len(args) == 0 || args[0] != "healthcheck" {
		return false, 0
	}
	if len(args) != 2 {
		fmt.Fprintln(stderr, "usage: healthcheck <url>")
		return true, 2
	}
	if err := Healthcheck(ctx, args[1], 3*time.Second); err != nil {
		fmt.Fprintln(stderr, err)
		return true, 1
	}
	return true, 0
}

// Main is the main function of every rtcedge binary: it cancels the context
// on SIGINT or SIGTERM, answers the `healthcheck URL` subcommand, and
// otherwise runs run with the command line and the environment, exiting 1
// with the error prefixed by name.
func Main(name string, run func(ctx context.Context, args []string, getenv func(string) string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if handled, code := RunHealthcheck(ctx, os.Args[1:], os.Stderr); handled {
		stop()
		os.Exit(code)
	}
	err := run(ctx, os.Args[1:], os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
