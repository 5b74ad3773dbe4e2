package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtcedge/rtcedge/internal/cli"
	relayv1 "github.com/rtcedge/rtcedge/proto/relay/v1"
)

// drainMaxWaitPastDeadline bounds -wait beyond -deadline: the relay releases
// what is left at the deadline, which takes a moment per session.
const drainMaxWaitPastDeadline = 30 * time.Second

// drainConfig is `mediarelay drain`'s command line.
type drainConfig struct {
	readyFile  string
	httpListen string
	adminToken string
	deadline   time.Duration
	wait       bool
	poll       time.Duration
}

func parseDrain(args []string, getenv func(string) string, stderr io.Writer) (drainConfig, error) {
	var c drainConfig
	fs := flag.NewFlagSet("mediarelay drain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mediarelay drain [-deadline D] [-wait] — tell the relay on this host to take no new session (its /readyz answers 503 from now on), "+
			"release what is left after -deadline, and with -wait return once it has no session left. In the relay's container (a Kubernetes preStop hook) it finds the relay "+
			"and its token in the relay's own environment.")
		fs.PrintDefaults()
	}
	// The relay's own variables back the flags that name them (read after
	// parsing, so -help never prints the token): run in the relay's
	// container (a Kubernetes preStop hook), drain finds the relay and its
	// token with no argument. No other variable is read.
	fromEnv := map[string]*string{cli.ReadyFileFlag: &c.readyFile, "http-listen": &c.httpListen, "admin-token": &c.adminToken}
	fs.StringVar(&c.readyFile, cli.ReadyFileFlag, "", "the relay's -ready-file, to read the relay's HTTP address from (preferred over -http-listen)")
	fs.StringVar(&c.httpListen, "http-listen", ":9091", "the relay's -http-listen, used without -ready-file; a wildcard host means this host (127.0.0.1)")
	fs.StringVar(&c.adminToken, "admin-token", "", "the relay's -admin-token (sent as a bearer token)")
	for name := range fromEnv {
		f := fs.Lookup(name)
		f.Usage += fmt.Sprintf(" (env %s)", cli.EnvName(name))
	}
	fs.DurationVar(&c.deadline, "deadline", 0, "the relay releases the sessions still open after this long (at least 1s); 0: they end on their own")
	fs.BoolVar(&c.wait, "wait", false, "return once the relay has no session left (at most -deadline plus 30s; needs -deadline)")
	fs.DurationVar(&c.poll, "poll", time.Second, "with -wait, how often to ask the relay how many sessions it has")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, dst := range fromEnv {
		if v := getenv(cli.EnvName(name)); v != "" && !set[name] {
			*dst = v
		}
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("drain: unexpected arguments %q", fs.Args())
	case c.deadline < 0 || c.deadline > 0 && c.deadline < time.Second:
		return c, fmt.Errorf("drain: -deadline %s: want 0 or at least 1s", c.deadline)
	case c.wait && c.deadline == 0:
		return c, errors.New("drain: -wait needs -deadline, so that it ends")
	case c.poll < 10*time.Millisecond || c.poll > time.Minute:
		return c, fmt.Errorf("drain: -poll %s: want 10ms to 1m", c.poll)
	}
	return c, nil
}

// relayHTTP returns the base URL of the relay's HTTP port: from the ready
// file when one is named, else from -http-listen; a wildcard or empty host
// is this host.
func (c drainConfig) relayHTTP() (string, error) {
	addr := c.httpListen
	if c.readyFile != "" {
		b, err := os.ReadFile(c.readyFile)
		if err != nil {
			return "", fmt.Errorf("drain: the relay's ready file (is the relay running?): %w", err)
		}
		var r cli.Ready
		if err := json.Unmarshal(b, &r); err != nil || r.HTTP == "" {
			return "", fmt.Errorf("drain: ready file %s names no HTTP address (%v)", c.readyFile, err)
		}
		addr = r.HTTP
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("drain: relay HTTP address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// runDrain is `mediarelay drain`: it calls the relay's Drain (REST on its
// HTTP port) and, with -wait, polls its status until no session is left.
func runDrain(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	c, err := parseDrain(args, getenv, stderr)
	if err != nil {
		return err
	}
	base, err := c.relayHTTP()
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	req := &relayv1.DrainRequest{}
	if c.deadline > 0 {
		req.Deadline = durationpb.New(c.deadline)
	}
	var resp relayv1.DrainResponse
	if err := c.call(ctx, hc, http.MethodPost, base+"/v1/drain", req, &resp); err != nil {
		return err
	}
	start := time.Now()
	fmt.Fprintf(stderr, "drain: %s draining with %d sessions, deadline %s\n", base, resp.GetSessionCount(), c.deadline)
	if !c.wait {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.deadline+drainMaxWaitPastDeadline)
	defer cancel()
	last := resp.GetSessionCount()
	for {
		var st relayv1.GetStatusResponse
		if err := c.call(ctx, hc, http.MethodGet, base+"/v1/status", nil, &st); err != nil {
			return fmt.Errorf("drain: %d sessions left after %s: %w", last, time.Since(start).Round(time.Second), err)
		}
		if n := st.GetSessionCount(); n == 0 {
			fmt.Fprintf(stderr, "drain: no session left after %s\n", time.Since(start).Round(100*time.Millisecond))
			return nil
		} else if n != last {
			fmt.Fprintf(stderr, "drain: %d sessions left after %s\n", n, time.Since(start).Round(time.Second))
			last = n
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %d sessions left after %s: %w", last, time.Since(start).Round(time.Second), ctx.Err())
		case <-time.After(c.poll):
		}
	}
}

// call sends in (nil: no body) as JSON and decodes the answer into out.
func (c drainConfig) call(ctx context.Context, hc *http.Client, method, url string, in, out proto.Message) error {
	var body io.Reader
	if in != nil {
		b, err := protojson.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.adminToken)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("drain: %s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("drain: %s %s: %w", method, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("drain: %s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, out); err != nil {
		return fmt.Errorf("drain: %s %s: decoding the answer: %w", method, url, err)
	}
	return nil
}
