package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ReadyFileFlag is the name of the flag (and, through EnvName, of the
// RTCEDGE_READY_FILE variable) that every service binary reads the ready
// file's path from.
const ReadyFileFlag = "ready-file"

// Ready is what a process writes to its -ready-file once every listener is
// bound: each listener's actual address (the port the kernel picked when
// the flag said 0). Fields a binary does not have are left out of the JSON.
//
//	signaling    {"pid", "http", "grpc"}
//	mediarelay   {"pid", "udp", "public", "tcp", "public_tcp", "grpc", "grpc_advertise", "http"}
//	demo-origin  {"pid", "http", "udp", "url"}
//	rtcedge      {"pid", "http", "grpc", "udp", "public", "tcp", "public_tcp", "relay_grpc", "relay_http", "origin_http", "origin_udp", "etcd"}
type Ready struct {
	// PID is the process id.
	PID int `json:"pid"`
	// HTTP is the main HTTP listener (signaling's WHIP/WHEP port, the
	// relay's REST and metrics port, the origin's API), host:port.
	HTTP string `json:"http,omitempty"`
	// GRPC is the gRPC listener, host:port.
	GRPC string `json:"grpc,omitempty"`
	// UDP are the bound UDP media addresses.
	UDP []string `json:"udp,omitempty"`
	// Public are the UDP addresses the relay advertises to clients.
	Public []string `json:"public,omitempty"`
	// TCP are the relay's bound ICE-TCP listeners (none with TCP off).
	TCP []string `json:"tcp,omitempty"`
	// PublicTCP are the ICE-TCP addresses the relay advertises to clients
	// (tcptype passive candidates).
	PublicTCP []string `json:"public_tcp,omitempty"`
	// GRPCAdvertise is the gRPC address the relay registers for signaling.
	GRPCAdvertise string `json:"grpc_advertise,omitempty"`
	// URL is the base URL the demo origin registers.
	URL string `json:"url,omitempty"`
	// RelayGRPC, RelayHTTP, OriginHTTP, OriginUDP and Etcd are the
	// all-in-one binary's other listeners (etcd: client endpoints).
	RelayGRPC  string   `json:"relay_grpc,omitempty"`
	RelayHTTP  string   `json:"relay_http,omitempty"`
	OriginHTTP string   `json:"origin_http,omitempty"`
	OriginUDP  []string `json:"origin_udp,omitempty"`
	Etcd       []string `json:"etcd,omitempty"`
}

// RegisterReadyFile adds -ready-file to fs, storing the path in dst.
func RegisterReadyFile(fs *flag.FlagSet, dst *string) {
	fs.StringVar(dst, ReadyFileFlag, "", "once every listener is bound, write a JSON object with their actual addresses to this file "+
		"(atomically: a temporary file in the same directory, then a rename); for supervisors, scripts and tests that start the process on port 0")
}

// ValidateReadyFile checks a -ready-file path: empty (no file), or a file
// name in a directory that exists.
func ValidateReadyFile(path string) error {
	if path == "" {
		return nil
	}
	if strings.HasSuffix(path, string(filepath.Separator)) {
		return fmt.Errorf("-%s %q: want a file name, not a directory", ReadyFileFlag, path)
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("-%s %q: %w", ReadyFileFlag, path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("-%s %q: %s is not a directory", ReadyFileFlag, path, dir)
	}
	return nil
}

// WriteReadyFile writes v (its PID set to this process's when zero) as JSON to path atomically: to a temporary file
// in the same directory, synced, then renamed over path, so a reader sees
// either no file or the whole object. An empty path writes nothing.
func WriteReadyFile(path string, v Ready) error {
	if path == "" {
		return nil
	}
	if v.PID == 0 {
		v.PID = os.Getpid()
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	b = append(b, '\n')
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}

// ReadReadyFile reads a ready file: os.ErrNotExist (wrapped) while the
// process has not written it.
func ReadReadyFile(path string) (Ready, error) {
	var r Ready
	b, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("ready file: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("ready file %s: %w", path, err)
	}
	return r, nil
}

// RemoveReadyFile removes the ready file at exit, so a stale file does not
// announce a process that is gone. A missing file is not an error.
func RemoveReadyFile(path string) error {
	if path == "" {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}
